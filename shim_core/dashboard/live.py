"""Live updates over server-sent events, from the durable event history.

One :class:`Hub` per app follows the history in a thread of its own, with blocking reads of at
most :data:`READ_BLOCK_S` (its stop flag is checked between two, so the server stops at once) on
a client of its own whose socket timeout is above that block (a network partition is noticed in
seconds, not waited out), and hands each batch to every connected page. A page connects to
``/api/live`` (``?run=ID`` for one run's events, ``?task=ID`` for one task's): it gets a
``snapshot`` of the state, whose SSE id is the history entry it was read at, then ``events``
messages from that entry on, and ``tick`` messages (workers, heartbeat ages, the pause switch:
state without events) at least every :data:`TICK_S` seconds, and a second after events (which may
have moved a worker). A page that reconnects sends ``Last-Event-ID`` and gets the events it
missed replayed from the history and a tick, or a fresh snapshot when they are no longer all
there; a page that falls behind catches up the same way.

A run or task that does not exist (or does not decode) is said once (``failure``) and the stream
ends for good; any other error (Redis unreachable) ends the stream after an ``unavailable``
message, and the page's EventSource reconnects a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, TLSOptions
from shim_core.dashboard.encoding import dumps
from shim_core.dashboard.events import batch_json, stream_key
from shim_core.dashboard.state import DashboardState
from shim_core.errors import CorruptTask, ShimError, TaskNotFound
from shim_core.history import START, EventLog, StreamedEvent
from shim_core.supervisor.runs import CorruptRun, RunNotFound

log = logging.getLogger(__name__)

#: Most seconds between two ticks; a tick also follows worker events within a second.
TICK_S = 5.0
#: Longest blocking read of the history: the hub checks whether it must stop between two.
READ_BLOCK_S = 0.5
#: Socket timeout of the hub's own client (above its block): a partition ends a read.
SOCKET_TIMEOUT_S = 10.0
#: Most seconds the server's shutdown waits for the hub's thread (a daemon thread).
STOP_WAIT_S = 3.0
#: Messages a slow page may fall behind by before it catches up from the history instead.
BACKLOG = 256
#: Most history entries replayed to a page that reconnects (beyond: a snapshot).
MAX_REPLAY = 5000

#: The first line of every stream: a page's EventSource reconnects after a second.
RETRY = b"retry: 1000\n\n"

Message = tuple[str, str, Any]  # kind ("events" / "tick"), stream id, payload

#: Errors that a reconnection cannot cure: said once as ``failure``, and the stream ends.
_FOR_GOOD = (RunNotFound, TaskNotFound, CorruptRun, CorruptTask)


def follower_connection(settings: Settings) -> RedisConnectionManager:
    """A connection for the hub's blocking reads: its own pool, a socket timeout above the
    block time, and no retries (the hub's loop retries every second, checking for a stop)."""
    return RedisConnectionManager(
        with_socket_timeout(settings.redis_url, SOCKET_TIMEOUT_S),
        retries=0,
        tls=TLSOptions.from_settings(settings),
        sentinel_password=settings.sentinel_password,
    )


def with_socket_timeout(url: str, seconds: float) -> str:
    """``url`` with ``socket_timeout`` at least ``seconds`` (an embedded URL as it is)."""
    if url.startswith("embedded:"):
        return url
    head, at, location = url.rpartition("@")
    base, _, query = location.partition("?")
    params = []
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name == "socket_timeout":  # a longer one is kept
            with contextlib.suppress(ValueError):
                seconds = max(seconds, float(value))
            continue
        params.append(item)
    params.append(f"socket_timeout={seconds:g}")
    return f"{head}{at}{base}?{'&'.join(params)}"


class Hub:
    """Follows the event history in one thread and fans each batch out to the pages."""

    def __init__(self, state: DashboardState, tick_s: float = TICK_S) -> None:
        self.state = state
        self.tick_s = tick_s
        #: Seconds between two tries while Redis is away.
        self.retry_s = 1.0
        #: The newest history entry handed to the pages (None until first read).
        self.cursor: str | None = None
        self._pages: set[MemoryObjectSendStream[Message]] = set()
        self._lagging: set[MemoryObjectSendStream[Message]] = set()
        self._connection: RedisConnectionManager | None = None
        self._log: EventLog | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """Whether the page's queue overflowed (it must catch up); clears the mark."""
        if send in self._lagging:
            self._lagging.discard(send)
            return True
        return False

    async def start(self) -> None:
        """Read the newest history id, then follow the history from it in a thread (the app's
        lifespan calls this before the server takes requests: no page starts before it). While
        Redis is away the thread reads that id once Redis is back."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            self.cursor = await anyio.to_thread.run_sync(lambda: self._history().last_id())
        self._thread = threading.Thread(target=self._follow, name="shim-dashboard-hub", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop following and wait for the thread: closing the hub's own connection ends its
        blocking read at once (that connection does not retry), else the read's block would."""
        self._stop.set()
        if self._connection is not None:
            self._connection.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the hub's thread is following the history."""
        return self._thread is not None and self._thread.is_alive()

    def _history(self) -> EventLog:
        """The hub's reader of the history, on its own connection (made on first use)."""
        if self._log is None:
            settings = self.state.queue.settings
            if self._connection is None:
                self._connection = follower_connection(settings)
            self._log = EventLog(self._connection, settings)  # connects: may raise
        return self._log

    def _follow(self) -> None:
        """The thread: ticks and blocking reads until stopped. While Redis is away the pages
        keep what they show, and the hub tries again every ``retry_s``."""
        last_tick, moved = time.monotonic(), False
        while not self._stop.is_set():
            try:
                due = (1.0 if moved else self.tick_s) - (time.monotonic() - last_tick)
                if due <= 0:  # a tick: at least every tick_s, and a second after any event
                    last_tick, moved = time.monotonic(), False
                    self._send(("tick", "", self.state.tick()))
                    continue
                history = self._history()
                if self.cursor is None:
                    self.cursor = history.last_id()
                batch = history.wait(self.cursor, min(due, READ_BLOCK_S))
                if batch.events:
                    self._send(("events", batch.cursor, list(batch.events)))
                    moved = True
                self.cursor = batch.cursor
            except Exception as exc:
                log.debug("dashboard hub: %s", exc)
                self._stop.wait(self.retry_s)

    def _send(self, message: Message) -> None:
        """Hand ``message`` to the pages, on the event loop (from the hub's thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish, message)

    def _publish(self, message: Message) -> None:
        for page in list(self._pages):
            try:
                page.send_nowait(message)
            except anyio.WouldBlock:
                self._lagging.add(page)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._pages.discard(page)


def sse(kind: str, data: Any, stream_id: str = "") -> bytes:
    """One server-sent event (strict JSON data on one line)."""
    head = f"id: {stream_id}\n" if stream_id else ""
    return f"{head}event: {kind}\ndata: {dumps(data)}\n\n".encode()


def sse_events(events: list[dict[str, Any]], stream_id: str) -> bytes:
    """An ``events`` message; none for the page: only its id, which moves the page's
    Last-Event-ID on without waking it."""
    return sse("events", events, stream_id) if events else f"id: {stream_id}\n\n".encode()


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
        cursor, chunks = await _begin(state, view, last_event_id)
        for chunk in chunks:
            yield chunk
        if cursor is None:
            return
        async for kind, stream_id, payload in receive:
            if hub.lagging(send):
                _drain(receive)  # what it dropped is in the history after its cursor
                cursor, chunks = await _begin(state, view, cursor)
                for chunk in chunks:
                    yield chunk
                if cursor is None:
                    return
                continue
            if kind == "tick":
                yield sse("tick", payload)
            elif stream_key(stream_id) > stream_key(cursor):
                fresh = [e for e in payload if stream_key(e.stream_id) > stream_key(cursor)]
                cursor = stream_id
                yield sse_events(batch_json(fresh, view.scope), stream_id)
    finally:
        hub.unsubscribe(send)
        receive.close()


async def _begin(
    state: DashboardState, view: View, last: str | None
) -> tuple[str | None, list[bytes]]:
    """:func:`_start` in a worker thread; on an error, no cursor (the stream ends) and what to
    say: ``failure`` for good, ``unavailable`` when the page should reconnect."""
    try:
        return await anyio.to_thread.run_sync(_start, state, view, last)
    except _FOR_GOOD as exc:
        return None, [sse("failure", {"error": str(exc)})]
    except ShimError as exc:  # Redis away or refusing: the page reconnects in a second
        log.warning("dashboard: a live stream ended: %s", exc)
        return None, [sse("unavailable", {"error": str(exc)})]
    except Exception:
        log.exception("dashboard: a live stream failed")
        return None, [sse("unavailable", {"error": "internal error (see the dashboard's log)"})]


def _drain(receive: MemoryObjectReceiveStream[Any]) -> None:
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            receive.receive_nowait()


def _start(state: DashboardState, view: View, last: str | None) -> tuple[str, list[bytes]]:
    """The first messages of a page and the history id they reach: the events after ``last``
    (its Last-Event-ID, or where it fell behind) and a tick when they are all still in the
    history, else a snapshot."""
    if last:
        replayed = _replay(state, view.scope, last)
        if replayed is not None:
            cursor, chunks = replayed
            return cursor, [*chunks, sse("tick", state.tick())]
    cursor = state.log.last_id()  # read first: what happens after the snapshot is not lost
    if view.task is not None:
        snapshot = state.task_snapshot(view.task, cursor)
    else:
        snapshot = state.snapshot(view.run)
    return cursor, [sse("snapshot", snapshot, cursor)]


def _replay(state: DashboardState, run_id: str | None, last: str) -> tuple[str, list[bytes]] | None:
    """The events after ``last`` as messages, or None when some may be gone (trimmed from the
    history, a Redis that is not the one ``last`` came from) or they are too many."""
    oldest = state.log.read(START, 1).cursor  # START: an empty history
    newest = state.log.last_id()
    if stream_key(last) > stream_key(newest) or stream_key(last) == (0, 0):
        return None
    if oldest != START and stream_key(oldest) > stream_key(last):
        return None  # the entries right after `last` may have been trimmed
    chunks: list[bytes] = []
    cursor, entries = last, 0
    for batch in state.log.batches(last):
        entries += _entries(batch.events)
        if entries > MAX_REPLAY:
            return None
        cursor = batch.cursor
        chunks.append(sse_events(batch_json(batch.events, run_id), cursor))
    return cursor, chunks


def _entries(events: Iterable[StreamedEvent]) -> int:
    return len({e.stream_id for e in events})
