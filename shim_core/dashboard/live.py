"""Live updates over server-sent events, from the durable event history.

One :class:`Hub` per app follows the history with a blocking read in a worker thread (no
polling) and hands each batch to every connected page. A page connects to ``/api/live``
(``?run=ID`` for one run's events): it gets a ``snapshot`` of the state, whose SSE id is the
history entry it was read at, then ``events`` messages from that entry on, and ``tick`` messages
(workers, heartbeat ages, the pause switch: state without events) at least every
:data:`TICK_S` seconds, and a second after events (which may have moved a worker). A page
that reconnects sends ``Last-Event-ID`` and gets the events it missed replayed from the
history, or a fresh snapshot when they are no longer all there.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shim_core.dashboard.events import batch_json
from shim_core.dashboard.state import DashboardState
from shim_core.errors import ShimError
from shim_core.history import START

#: Most seconds between two ticks; a tick also follows worker events within a second.
TICK_S = 5.0
#: Messages a slow page may fall behind by before it is sent a fresh snapshot instead.
BACKLOG = 256
#: Most history entries replayed to a page that reconnects (beyond: a snapshot).
MAX_REPLAY = 5000

#: The first line of every stream: a page's EventSource reconnects after a second.
RETRY = b"retry: 1000\n\n"

Message = tuple[str, str, Any]  # kind ("events" / "tick"), stream id, payload


def stream_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair (``"0-0"`` for anything malformed)."""
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class Hub:
    """Follows the event history in one thread and fans each batch out to the pages."""

    def __init__(self, state: DashboardState, tick_s: float = TICK_S) -> None:
        self.state = state
        self.tick_s = tick_s
        self._pages: set[MemoryObjectSendStream[Message]] = set()
        self._lagging: set[MemoryObjectSendStream[Message]] = set()

    def subscribe(self) -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Any]]:
        """A page's queue of messages (subscribe before reading the snapshot: nothing is lost)."""
        send, receive = anyio.create_memory_object_stream[Message](BACKLOG)
        self._pages.add(send)
        return send, receive

    def unsubscribe(self, send: MemoryObjectSendStream[Message]) -> None:
        self._pages.discard(send)
        self._lagging.discard(send)
        send.close()

    def close(self) -> None:
        """End every page's stream (the server is stopping: nothing waits on them)."""
        for page in list(self._pages):
            page.close()
        self._pages.clear()

    def lagging(self, send: MemoryObjectSendStream[Message]) -> bool:
        """Whether the page's queue overflowed (it needs a snapshot); clears the mark."""
        if send in self._lagging:
            self._lagging.discard(send)
            return True
        return False

    async def run(self) -> None:
        """Follow the history until cancelled (the app's lifespan runs it). While Redis is
        away the pages keep what they show, and the hub tries again every second."""
        cursor = None
        last_tick, moved = time.monotonic(), False
        while True:
            due = (1.0 if moved else self.tick_s) - (time.monotonic() - last_tick)
            if due <= 0:  # a tick: at least every tick_s, and a second after any event
                tick = await self._call(self.state.tick)
                if tick is not None:
                    self._publish(("tick", "", tick))
                last_tick, moved = time.monotonic(), False
                continue
            if cursor is None:
                cursor = await self._call(self.state.log.last_id)
            batch = None if cursor is None else await self._call(self.state.log.wait, cursor, due)
            if batch is None:
                await anyio.sleep(min(due, 1.0))
            elif batch:
                cursor = batch[-1].stream_id
                self._publish(("events", cursor, batch))
                moved = True

    async def _call(self, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)`` in a worker thread; None when it failed (Redis away)."""
        try:
            return await anyio.to_thread.run_sync(read, *args, abandon_on_cancel=True)
        except Exception:
            return None

    def _publish(self, message: Message) -> None:
        for page in list(self._pages):
            try:
                page.send_nowait(message)
            except anyio.WouldBlock:
                self._lagging.add(page)


def sse(kind: str, data: Any, stream_id: str = "") -> bytes:
    """One server-sent event (JSON data on one line)."""
    head = f"id: {stream_id}\n" if stream_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@attrs.frozen
class View:
    """What a page shows: a run (``run``), a task (``task``) or the runs (neither)."""

    run: str | None = None
    task: str | None = None

    @property
    def scope(self) -> str | None:
        """The run whose events the page wants (None: every event of the namespace)."""
        if self.run is None and self.task is not None and ":" in self.task:
            return self.task.split(":", 1)[0]
        return self.run


async def page_stream(hub: Hub, view: View, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The messages of one page: a snapshot (or the replay it missed), then what the hub sees."""
    send, receive = hub.subscribe()
    state = hub.state
    try:
        yield RETRY
        try:
            cursor, chunks = await anyio.to_thread.run_sync(_start, state, view, last_event_id)
        except ShimError as exc:  # no such run, Redis away: said once, and the stream ends
            yield sse("failure", {"error": str(exc)})
            return
        for chunk in chunks:
            yield chunk
        async for kind, stream_id, payload in receive:
            if hub.lagging(send):
                _drain(receive)  # older than the snapshot that replaces them
                cursor, chunks = await anyio.to_thread.run_sync(_start, state, view, None)
                for chunk in chunks:
                    yield chunk
                continue
            if kind == "tick":
                yield sse("tick", payload)
            elif stream_key(stream_id) > stream_key(cursor):
                fresh = [e for e in payload if stream_key(e.stream_id) > stream_key(cursor)]
                cursor = stream_id
                yield sse("events", batch_json(fresh, view.scope), stream_id)
    finally:
        hub.unsubscribe(send)
        receive.close()


def _drain(receive: MemoryObjectReceiveStream[Any]) -> None:
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            receive.receive_nowait()


def _start(state: DashboardState, view: View, last: str | None) -> tuple[str, list[bytes]]:
    """The first messages of a page and the history id they reach: the missed events when
    ``last`` (its Last-Event-ID) is still in the history, else a snapshot."""
    if last:
        replayed = _replay(state, view.scope, last)
        if replayed is not None:
            return replayed
    cursor = state.log.last_id()  # read first: what happens after the snapshot is not lost
    snapshot = state.snapshot(view.run, runs=view.task is None)
    return cursor, [sse("snapshot", snapshot, cursor)]


def _replay(state: DashboardState, run_id: str | None, last: str) -> tuple[str, list[bytes]] | None:
    """The events after ``last`` as messages, or None when some may be gone (trimmed from the
    history, a Redis that is not the one ``last`` came from) or they are too many."""
    oldest = state.log.read(START, 1)
    newest = state.log.last_id()
    if stream_key(last) > stream_key(newest) or stream_key(last) == (0, 0):
        return None
    if oldest and stream_key(oldest[0].stream_id) > stream_key(last):
        return None  # the entries right after `last` may have been trimmed
    chunks: list[bytes] = []
    cursor, entries = last, 0
    while True:
        batch = state.log.read(cursor)
        if not batch:
            return cursor, chunks
        entries += len({e.stream_id for e in batch})
        if entries > MAX_REPLAY:
            return None
        cursor = batch[-1].stream_id
        chunks.append(sse("events", batch_json(batch, run_id), cursor))
