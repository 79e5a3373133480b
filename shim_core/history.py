"""EventLog: the namespace's durable event history (a capped Redis stream).

Every Lua script that makes a transition publishes its events on pub/sub (low latency, lost when
nobody listens) and appends the same events, as one entry per script call, to the stream
``shim:{ns}:events`` (``XADD ... MAXLEN ~ 100000``, heartbeats aside: they are state, not
history). A reader replays from a stream entry id, then follows with blocking reads; one that
fell behind catches up from the stream instead of losing events. Entry ids only grow, so a reader
keeps the id of the last entry it handled as its cursor (several events of one batch share an
entry and its id).

Data read from the stream is untrusted: an entry that does not decode is skipped and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import attrs

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, redis_errors
from shim_core.keys import Keys
from shim_core.models import ProgressEvent
from shim_core.serde import events_from_json

log = logging.getLogger(__name__)

#: The cursor of a reader that wants the whole history.
START = "0-0"
#: Entries one read asks for: bounds the memory of a catch-up and the reply size.
READ_BATCH = 1000


@attrs.frozen
class StreamedEvent:
    """One event of the history and the id of the stream entry that holds it."""

    stream_id: str
    event: ProgressEvent


@attrs.frozen
class EventBatch:
    """The events of one read, oldest first, and the cursor to read on from: the id of the
    last entry read, also when it did not decode (``after`` when nothing was read). Iterating
    a batch gives its events."""

    events: tuple[StreamedEvent, ...]
    cursor: str

    def __iter__(self) -> Iterator[StreamedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> StreamedEvent:
        return self.events[index]


class EventLog:
    """Read the durable event history of one namespace."""

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self._key = self.keys.events()
        self._connection = connection
        # redis-py types replies as bytes | str; with decode_responses they are always str.
        self._client: Any = connection.get_client()
        #: Entries skipped because they did not decode (untrusted data).
        self.decode_errors = 0

    @redis_errors
    def last_id(self) -> str:
        """Id of the newest entry (``0-0`` when the history is empty): a reader that wants only
        what happens from now on starts there."""
        newest = self._client.xrevrange(self._key, count=1)
        return str(newest[0][0]) if newest else START

    @redis_errors
    def read(self, after: str = START, limit: int = READ_BATCH) -> EventBatch:
        """The events of up to ``limit`` entries after entry ``after`` (exclusive)."""
        entries = self._client.xrange(self._key, min=f"({after}", count=limit)
        return self._batch(entries, after)

    @redis_errors
    def wait(self, after: str, timeout: float, limit: int = READ_BATCH) -> EventBatch:
        """Like :meth:`read`, but when nothing is newer than ``after`` block until an entry
        arrives or ``timeout`` seconds pass (then an empty batch): a follower never polls."""
        block = max(1, int(timeout * 1000))
        reply = self._client.xread({self._key: after}, count=limit, block=block)
        return self._batch(_entries_of(reply) if reply else [], after)

    def follow(
        self, after: str = START, stop: threading.Event | None = None, timeout: float = 1.0
    ) -> Iterator[StreamedEvent]:
        """Every event after ``after``: the history first, then new events as they happen,
        until ``stop`` is set (checked at least every ``timeout`` seconds)."""
        stop = stop or threading.Event()
        cursor = after
        while not stop.is_set():
            batch = self.wait(cursor, timeout)
            yield from batch
            cursor = batch.cursor

    @redis_errors
    def batches(self, after: str = START) -> Iterator[EventBatch]:
        """Every batch after entry ``after``, oldest first, up to the newest entry now (reads
        :data:`READ_BATCH` entries at a time; a caller may stop early)."""
        cursor = after
        while True:
            batch = self.read(cursor)
            if batch.cursor == cursor:
                return
            yield batch
            cursor = batch.cursor

    def of_run(self, run_id: str, after: str = START) -> list[StreamedEvent]:
        """The history of run ``run_id`` still in the stream: the events of its tasks (whose ids
        are ``<run_id>:<plan id>``), oldest first. Stream ids start with the server's clock in
        ms: ``after`` = just before the run was created skips everything older."""
        prefix = f"{run_id}:"
        return [
            e for batch in self.batches(after) for e in batch if e.event.task_id.startswith(prefix)
        ]

    def _batch(self, entries: list[Any], after: str) -> EventBatch:
        out: list[StreamedEvent] = []
        for entry_id, fields in entries:
            payload = fields.get("e") if isinstance(fields, dict) else None
            try:
                if not isinstance(payload, str):
                    raise ValueError("no event field")
                events = events_from_json(payload)
            except Exception as exc:  # untrusted data: skip the entry, never the reader
                self.decode_errors += 1
                log.warning("skipped event history entry %s: %s", entry_id, exc)
                continue
            out.extend(StreamedEvent(str(entry_id), event) for event in events)
        cursor = str(entries[-1][0]) if entries else after
        return EventBatch(tuple(out), cursor)


def _entries_of(reply: Any) -> list[Any]:
    """The entries of an XREAD reply of one stream, whatever shape redis-py gives it: RESP2's
    ``[[key, entries]]`` or a map of the key to its entries (wrapped in a list by some
    versions)."""
    value = next(iter(reply.values()), []) if isinstance(reply, dict) else reply[0][1]
    if value and isinstance(value[0], list) and value[0] and isinstance(value[0][0], list | tuple):
        value = value[0]
    return list(value)
