"""MessageBus (seed component 3): publish / subscribe of ProgressEvents under the namespace.

Deliveries are awaited with queue / threading.Event timeouts, never with fixed sleeps. To prove that
something was *not* delivered, a marker event is published afterwards on a channel the same bus
listens to: messages on one connection arrive in order, so once the marker is in, anything
published before it would have been too.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from pytest_shim import RedisServer
from shim_core import bus as bus_module
from shim_core.bus import Channels, MessageBus
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import (
    EventType,
    ProgressEvent,
    ProgressInfo,
    Task,
    TaskResult,
    TaskStatus,
)
from shim_core.queue import TaskQueue

TIMEOUT = 5.0


def event(
    event_id: str, event_type: EventType = EventType.PROGRESS, **fields: object
) -> ProgressEvent:
    return ProgressEvent(id=event_id, type=event_type, **fields)  # type: ignore[arg-type]


class Recorder:
    """An event handler that queues ``(channel, event)``; events whose id starts with ``probe``
    only set :attr:`probed` (they synchronise pattern subscriptions)."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[str, ProgressEvent]] = queue.Queue()
        self.probed = threading.Event()

    def __call__(self, ev: ProgressEvent, channel: str) -> None:
        if ev.id.startswith("probe"):
            self.probed.set()
            return
        self.items.put((channel, ev))

    def next(self, timeout: float = TIMEOUT) -> tuple[str, ProgressEvent]:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event delivered within {timeout} s") from None

    def ids(self, n: int) -> list[str]:
        """The ids of the next ``n`` events."""
        return [self.next()[1].id for _ in range(n)]

    def assert_empty(self) -> None:
        leftover = []
        while not self.items.empty():
            leftover.append(self.items.get_nowait())
        assert not leftover, f"unexpected deliveries: {leftover}"


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)  # polling pace only; the assertion is on the condition


def wait_subscribed(bus: MessageBus, channel: str, count: int = 1) -> None:
    """Wait until the server counts ``count`` subscribers of ``channel`` (SUBSCRIBE is async)."""
    wait_until(lambda: bus.subscriber_count(channel) >= count)


def wait_listening(bus: MessageBus, channel: str, recorder: Recorder) -> None:
    """Publish probes on ``channel`` until ``recorder`` (on a pattern) receives one."""
    deadline = time.monotonic() + TIMEOUT
    while not recorder.probed.is_set():
        assert time.monotonic() < deadline, f"pattern subscription never saw {channel}"
        bus.publish(channel, event(f"probe-{uuid.uuid4().hex[:6]}", EventType.HEARTBEAT))
        recorder.probed.wait(0.05)


@pytest.fixture
def other_bus(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Iterator[MessageBus]:
    """A second MessageBus on the same namespace (its own subscriber connection)."""
    bus = MessageBus(shim_connection, shim_settings)
    yield bus
    bus.close()


# ---------------------------------------------------------------- publishing
def test_publish_returns_the_number_of_receivers(shim_bus: MessageBus) -> None:
    """publish() returns 0 with no subscriber and 1 once a bus subscribes the channel."""
    assert shim_bus.publish(Channels.TASK_PROGRESS, event("nobody")) == 0

    shim_bus.subscribe(Channels.TASK_PROGRESS, Recorder())
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)

    assert shim_bus.publish(Channels.TASK_PROGRESS, event("one")) == 1


def test_subscribe_delivers_decoded_events_with_relative_channel(shim_bus: MessageBus) -> None:
    """A subscriber gets ProgressEvent objects, equal to those sent, on the un-prefixed channel."""
    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)
    sent = event(
        "e1",
        task_id="t1",
        worker_id="w1",
        status=TaskStatus.RUNNING,
        attempt=1,
        progress=ProgressInfo(current=3, total=4, percentage=0.75, message="almost"),
    )

    shim_bus.publish(Channels.TASK_PROGRESS, sent)

    channel, received = recorder.next()
    assert channel == "task:progress"
    assert isinstance(received, ProgressEvent)
    assert received == sent


def test_events_arrive_in_publish_order(shim_bus: MessageBus) -> None:
    """Events published on one channel are delivered in the order they were published."""
    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_STARTED, recorder)
    wait_subscribed(shim_bus, Channels.TASK_STARTED)

    for i in range(20):
        shim_bus.publish(Channels.TASK_STARTED, event(f"e{i}", EventType.STARTED))

    assert recorder.ids(20) == [f"e{i}" for i in range(20)]


def test_psubscribe_matches_a_pattern(shim_bus: MessageBus, other_bus: MessageBus) -> None:
    """A ``task:*`` pattern receives every task channel, with the concrete channel name, and
    nothing from other channels."""
    recorder = Recorder()
    shim_bus.psubscribe(Channels.TASK_EVENTS, recorder)
    wait_listening(other_bus, "task:probe", recorder)

    other_bus.publish(Channels.TASK_STARTED, event("a", EventType.STARTED))
    other_bus.publish(Channels.WORKER_HEARTBEAT, event("not-a-task", EventType.HEARTBEAT))
    other_bus.publish(Channels.TASK_COMPLETED, event("b", EventType.COMPLETED))

    assert recorder.next()[0] == "task:started"
    channel, last = recorder.next()
    assert (channel, last.id) == ("task:completed", "b")  # the worker event was never delivered
    recorder.assert_empty()


def test_several_subscribers_per_channel(shim_bus: MessageBus, other_bus: MessageBus) -> None:
    """Two buses and two handlers on one bus all receive each event; the server counts 2
    subscriber connections."""
    first, second, third = Recorder(), Recorder(), Recorder()
    shim_bus.subscribe(Channels.TASK_FAILED, first)
    shim_bus.subscribe(Channels.TASK_FAILED, second)
    other_bus.subscribe(Channels.TASK_FAILED, third)
    wait_subscribed(shim_bus, Channels.TASK_FAILED, 2)

    receivers = shim_bus.publish(Channels.TASK_FAILED, event("boom", EventType.FAILED))

    assert receivers == 2  # connections, not handlers
    assert shim_bus.subscriber_count(Channels.TASK_FAILED) == 2
    for recorder in (first, second, third):
        assert recorder.next()[1].id == "boom"
    assert shim_bus.get_event_stats().channels == 1


def test_unsubscribe_stops_delivery(shim_bus: MessageBus) -> None:
    """After unsubscribe() the channel has no subscriber and its events no longer reach the
    handler, while other channels still deliver; subscribing again resumes delivery."""
    recorder, marker = Recorder(), Recorder()
    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    shim_bus.subscribe(Channels.TASK_COMPLETED, marker)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)
    wait_subscribed(shim_bus, Channels.TASK_COMPLETED)

    shim_bus.unsubscribe(Channels.TASK_PROGRESS)
    wait_until(lambda: shim_bus.subscriber_count(Channels.TASK_PROGRESS) == 0)

    assert shim_bus.publish(Channels.TASK_PROGRESS, event("dropped")) == 0
    shim_bus.publish(Channels.TASK_COMPLETED, event("marker", EventType.COMPLETED))
    assert marker.next()[1].id == "marker"
    recorder.assert_empty()
    assert shim_bus.get_event_stats().channels == 1

    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)
    shim_bus.publish(Channels.TASK_PROGRESS, event("again"))
    assert recorder.next()[1].id == "again"


def test_unsubscribe_of_the_last_channel_then_subscribe_again(shim_bus: MessageBus) -> None:
    """A bus left with no subscription at all still delivers after a new subscribe()."""
    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_STALLED, recorder)
    wait_subscribed(shim_bus, Channels.TASK_STALLED)
    shim_bus.unsubscribe(Channels.TASK_STALLED)
    wait_until(lambda: shim_bus.subscriber_count(Channels.TASK_STALLED) == 0)

    shim_bus.subscribe(Channels.TASK_CANCELLED, recorder)
    wait_subscribed(shim_bus, Channels.TASK_CANCELLED)
    shim_bus.publish(Channels.TASK_CANCELLED, event("c", EventType.CANCELLED))

    assert recorder.next() == ("task:cancelled", event("c", EventType.CANCELLED))


def test_punsubscribe_stops_pattern_delivery(shim_bus: MessageBus) -> None:
    """After punsubscribe() the pattern's handler gets nothing more, while a channel
    subscription on the same bus keeps delivering."""
    pattern_recorder, marker = Recorder(), Recorder()
    shim_bus.psubscribe(Channels.TASK_EVENTS, pattern_recorder)
    wait_listening(shim_bus, "task:probe", pattern_recorder)
    shim_bus.subscribe(Channels.WORKER_CRASHED, marker)
    wait_subscribed(shim_bus, Channels.WORKER_CRASHED)

    shim_bus.punsubscribe(Channels.TASK_EVENTS)
    assert shim_bus.get_event_stats().patterns == 0
    wait_until(lambda: shim_bus.publish(Channels.TASK_STARTED, event("probe-x")) == 0)

    shim_bus.publish(Channels.TASK_STARTED, event("dropped", EventType.STARTED))
    shim_bus.publish(Channels.WORKER_CRASHED, event("marker", EventType.HEARTBEAT))
    assert marker.next()[1].id == "marker"
    pattern_recorder.assert_empty()


def test_subscriber_count(shim_bus: MessageBus, other_bus: MessageBus) -> None:
    """subscriber_count counts subscriber connections of one channel, not pattern subscribers."""
    assert shim_bus.subscriber_count(Channels.WORKER_REGISTERED) == 0

    shim_bus.subscribe(Channels.WORKER_REGISTERED, Recorder())
    wait_subscribed(shim_bus, Channels.WORKER_REGISTERED, 1)
    other_bus.subscribe(Channels.WORKER_REGISTERED, Recorder())
    wait_subscribed(shim_bus, Channels.WORKER_REGISTERED, 2)
    pattern = Recorder()
    other_bus.psubscribe(Channels.WORKER_EVENTS, pattern)
    wait_listening(shim_bus, "worker:probe", pattern)

    assert shim_bus.subscriber_count(Channels.WORKER_REGISTERED) == 2
    assert other_bus.subscriber_count(Channels.WORKER_REGISTERED) == 2
    assert shim_bus.subscriber_count(Channels.WORKER_HEARTBEAT) == 0


def test_publish_to_pattern(shim_bus: MessageBus, other_bus: MessageBus) -> None:
    """publish_to_pattern sends to each channel that matches and has a subscriber, and returns
    how many channels that was."""
    assert shim_bus.publish_to_pattern(Channels.TASK_EVENTS, event("to-nobody")) == 0
    recorder = Recorder()
    for channel in (Channels.TASK_STARTED, Channels.TASK_PROGRESS, Channels.WORKER_HEARTBEAT):
        other_bus.subscribe(channel, recorder)
        wait_subscribed(shim_bus, channel)
    before = shim_bus.get_event_stats().published

    sent = shim_bus.publish_to_pattern(Channels.TASK_EVENTS, event("fanout"))

    assert sent == 2
    assert shim_bus.get_event_stats().published == before + 2
    shim_bus.publish(Channels.WORKER_HEARTBEAT, event("marker", EventType.HEARTBEAT))
    deliveries = [recorder.next() for _ in range(3)]
    assert sorted((ch, ev.id) for ch, ev in deliveries[:2]) == [
        ("task:progress", "fanout"),
        ("task:started", "fanout"),
    ]
    assert (deliveries[2][0], deliveries[2][1].id) == ("worker:heartbeat", "marker")
    recorder.assert_empty()


# ----------------------------------------------------------------- statistics
def test_event_stats_count_published_and_received(shim_bus: MessageBus) -> None:
    """get_event_stats counts publishes, decoded deliveries, channels and patterns."""
    stats = shim_bus.get_event_stats()
    assert (
        stats.published,
        stats.received,
        stats.handler_errors,
        stats.decode_errors,
        stats.channels,
        stats.patterns,
    ) == (0, 0, 0, 0, 0, 0)
    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)

    shim_bus.publish(Channels.TASK_PROGRESS, event("a"))
    shim_bus.publish(Channels.TASK_PROGRESS, event("b"))
    assert recorder.ids(2) == ["a", "b"]

    stats = shim_bus.get_event_stats()
    assert (stats.published, stats.received, stats.handler_errors, stats.decode_errors) == (
        2,
        2,
        0,
        0,
    )
    assert (stats.channels, stats.patterns) == (1, 0)
    shim_bus.psubscribe(Channels.SUPERVISOR_EVENTS, recorder)
    assert shim_bus.get_event_stats().patterns == 1


def test_failing_handler_is_counted_and_the_listener_goes_on(shim_bus: MessageBus) -> None:
    """A handler that raises is counted in handler_errors; other handlers and later events
    are still delivered."""
    calls: list[str] = []

    def explode(ev: ProgressEvent, _channel: str) -> None:
        calls.append(ev.id)
        raise RuntimeError("handler bug")

    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_PROGRESS, explode)
    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)

    shim_bus.publish(Channels.TASK_PROGRESS, event("first"))
    shim_bus.publish(Channels.TASK_PROGRESS, event("second"))

    assert recorder.ids(2) == ["first", "second"]
    assert calls == ["first", "second"]
    stats = shim_bus.get_event_stats()
    assert stats.handler_errors == 2
    assert stats.received == 2


def test_foreign_messages_are_counted_as_decode_errors(
    shim_bus: MessageBus, shim_connection: RedisConnectionManager
) -> None:
    """Non-JSON and wrongly shaped messages published by someone else are counted and skipped;
    the next valid event is delivered."""
    recorder = Recorder()
    shim_bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_subscribed(shim_bus, Channels.TASK_PROGRESS)
    raw = shim_connection.get_client()
    wire_channel = shim_bus.keys.channel(Channels.TASK_PROGRESS)

    assert raw.publish(wire_channel, "this is not json") == 1
    assert raw.publish(wire_channel, '{"id": "x", "type": "no-such-type"}') == 1
    shim_bus.publish(Channels.TASK_PROGRESS, event("valid"))

    assert recorder.next()[1].id == "valid"
    recorder.assert_empty()
    stats = shim_bus.get_event_stats()
    assert stats.decode_errors == 2
    assert stats.received == 1


# ----------------------------------------------------------------- namespaces
def test_namespaces_are_isolated(
    shim_bus: MessageBus, shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A bus in another namespace neither receives this namespace's events nor reaches it."""
    other_settings = Settings(
        redis_url=shim_settings.redis_url, namespace=f"{shim_settings.namespace}-other"
    )
    with MessageBus(shim_connection, other_settings) as foreign:
        mine, theirs = Recorder(), Recorder()
        shim_bus.subscribe(Channels.TASK_PROGRESS, mine)
        shim_bus.psubscribe(Channels.TASK_EVENTS, mine)
        foreign.subscribe(Channels.TASK_PROGRESS, theirs)
        wait_subscribed(shim_bus, Channels.TASK_PROGRESS)
        wait_subscribed(foreign, Channels.TASK_PROGRESS)
        wait_listening(shim_bus, "task:probe", mine)

        assert shim_bus.subscriber_count(Channels.TASK_PROGRESS) == 1
        assert foreign.publish(Channels.TASK_PROGRESS, event("from-foreign")) == 1
        assert foreign.publish(Channels.TASK_STARTED, event("nobody-here")) == 0
        assert shim_bus.publish(Channels.TASK_PROGRESS, event("from-mine")) == 2  # chan + pattern
        foreign.publish(Channels.TASK_PROGRESS, event("foreign-marker"))

        assert sorted(mine.ids(2)) == ["from-mine", "from-mine"]
        mine.assert_empty()
        assert theirs.ids(2) == ["from-foreign", "foreign-marker"]


# ------------------------------------------------------------ queue lifecycle
def test_queue_lifecycle_events_reach_the_bus(shim_bus: MessageBus, shim_queue: TaskQueue) -> None:
    """Claim, progress and complete publish started, progress and completed events for the
    task, in order, with progress.percentage and completion.output filled in."""
    recorder = Recorder()
    for channel in (Channels.TASK_STARTED, Channels.TASK_PROGRESS, Channels.TASK_COMPLETED):
        shim_bus.subscribe(channel, recorder)
        wait_subscribed(shim_bus, channel)
    shim_queue.add(Task(id="life-1", type="code", title="lifecycle"))

    [claim] = shim_queue.claim(["code"], worker_id="w1")
    shim_queue.progress("life-1", claim.token, 0.5, "half way")
    shim_queue.complete("life-1", claim.token, TaskResult(success=True, output={"lines": 3}))

    deliveries = [recorder.next() for _ in range(3)]
    recorder_channels = [channel for channel, _ in deliveries]
    started, progress, completed = (ev for _, ev in deliveries)
    assert recorder_channels == ["task:started", "task:progress", "task:completed"]
    assert [e.type for e in (started, progress, completed)] == [
        EventType.STARTED,
        EventType.PROGRESS,
        EventType.COMPLETED,
    ]
    for ev in (started, progress, completed):
        assert ev.task_id == "life-1"
        assert ev.worker_id == "w1"
        assert ev.attempt == 1
        assert ev.timestamp is not None
        assert ev.timestamp.tzinfo is not None
    assert started.status is TaskStatus.RUNNING
    assert progress.progress == ProgressInfo(
        current=50, total=100, percentage=0.5, message="half way"
    )
    assert completed.status is TaskStatus.COMPLETE
    assert completed.completion is not None
    assert completed.completion.success is True
    assert completed.completion.output == {"lines": 3}
    assert int(started.id) < int(progress.id) < int(completed.id)
    assert started.timestamp <= progress.timestamp <= completed.timestamp  # type: ignore[operator]
    recorder.assert_empty()


def test_failed_attempt_publishes_retrying_then_failed(
    shim_bus: MessageBus, shim_queue: TaskQueue
) -> None:
    """A failure with attempts left publishes task:retrying; the last one publishes task:failed,
    both carrying the error."""
    recorder = Recorder()
    shim_bus.psubscribe(Channels.TASK_EVENTS, recorder)
    wait_listening(shim_bus, "task:probe", recorder)
    shim_queue.add(Task(id="flaky", type="test", max_attempts=2, backoff_ms=0))

    [claim] = shim_queue.claim(["test"], worker_id="w2")
    assert shim_queue.fail("flaky", claim.token, "first boom").final is False
    [claim] = shim_queue.claim(["test"], worker_id="w2")
    assert shim_queue.fail("flaky", claim.token, "second boom").final is True

    seen = []
    while not seen or seen[-1].type is not EventType.FAILED:
        _, ev = recorder.next()
        if ev.task_id == "flaky" and ev.type is not EventType.RELEASED:
            seen.append(ev)
    assert [e.type for e in seen] == [
        EventType.STARTED,
        EventType.RETRYING,
        EventType.STARTED,
        EventType.FAILED,
    ]
    assert seen[1].completion is not None
    assert seen[1].completion.error == "first boom"
    assert seen[3].completion is not None
    assert seen[3].completion.error == "second boom"
    assert [e.attempt for e in seen] == [1, 1, 2, 2]


# ------------------------------------------------------------------ lifecycle
def test_close_stops_the_listener(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """close() ends the listener thread and drops the subscription on the server."""
    bus = MessageBus(shim_connection, shim_settings)
    bus.subscribe(Channels.TASK_PROGRESS, Recorder())
    wait_subscribed(bus, Channels.TASK_PROGRESS)
    listener = bus._thread
    assert listener is not None
    assert listener.is_alive()

    bus.close()

    assert not listener.is_alive()
    wait_until(lambda: bus.subscriber_count(Channels.TASK_PROGRESS) == 0)


def test_close_wakes_the_listener_in_the_middle_of_its_read(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() does not wait out the listener's read (a minute here): a PING ends it, and its
    pong is neither an event nor an undecodable message."""
    monkeypatch.setattr(bus_module, "_READ_TIMEOUT", 60.0)
    bus = MessageBus(shim_connection, shim_settings)
    recorder = Recorder()
    bus.subscribe(Channels.TASK_PROGRESS, recorder)
    wait_listening(bus, Channels.TASK_PROGRESS, recorder)
    listener = bus._thread
    assert listener is not None

    closer = threading.Thread(target=bus.close)
    closer.start()
    closer.join(timeout=30)  # far below the read's minute: only a wake-up ends it sooner

    assert not closer.is_alive()
    assert not listener.is_alive()
    stats = bus.get_event_stats()
    assert (stats.decode_errors, stats.handler_errors) == (0, 0)


def test_close_ends_a_listener_left_without_any_subscription(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener whose last subscription is gone waits for a new one; close() ends that wait
    at once (nothing to PING through)."""
    monkeypatch.setattr(bus_module, "_READ_TIMEOUT", 60.0)
    monkeypatch.setattr(bus_module, "_IDLE_WAIT", 60.0)
    bus = MessageBus(shim_connection, shim_settings)
    bus.subscribe(Channels.TASK_STALLED, Recorder())
    wait_subscribed(bus, Channels.TASK_STALLED)
    bus.unsubscribe(Channels.TASK_STALLED)
    wait_until(lambda: not bus._pubsub.subscribed)
    listener = bus._thread
    assert listener is not None

    closer = threading.Thread(target=bus.close)
    closer.start()
    closer.join(timeout=30)

    assert not closer.is_alive()
    assert not listener.is_alive()


@pytest.mark.shim_real_redis
def test_subscriber_receives_again_after_a_redis_restart(
    shim_redis_server_factory: Callable[..., RedisServer],
) -> None:
    """After Redis is killed and restarted on its port, the bus resubscribes by itself and the
    handler receives newly published events."""
    server = shim_redis_server_factory(appendonly=False)
    manager = RedisConnectionManager(server.url)
    settings = Settings(redis_url=server.url, namespace="restart")
    received = threading.Event()
    got: list[str] = []

    def handler(ev: ProgressEvent, channel: str) -> None:
        got.append(f"{channel}/{ev.id}")
        received.set()

    bus = MessageBus(manager, settings)
    try:
        bus.subscribe(Channels.TASK_PROGRESS, handler)
        wait_subscribed(bus, Channels.TASK_PROGRESS)
        bus.publish(Channels.TASK_PROGRESS, event("before"))
        assert received.wait(TIMEOUT)

        server.kill()
        server.start()
        received.clear()

        deadline = time.monotonic() + 10.0
        while not received.is_set():  # published events are lost until the bus resubscribes
            assert time.monotonic() < deadline, "no event delivered after the restart"
            bus.publish(Channels.TASK_PROGRESS, event("after"))
            received.wait(0.1)

        assert got[0] == "task:progress/before"
        assert got[-1] == "task:progress/after"
        assert bus.subscriber_count(Channels.TASK_PROGRESS) == 1
    finally:
        bus.close()
        manager.disconnect()
