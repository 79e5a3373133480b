"""The worker registry: registration, status, heartbeats, crash detection (missed beats and
liveness), requeueing a crashed worker's tasks, queries, cleanup and statistics."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shim_core import registry as registry_module
from shim_core.bus import MessageBus
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ConfigError
from shim_core.models import (
    Task,
    TaskResult,
    TaskStatus,
    WorkerCapabilities,
    WorkerRegistration,
    WorkerStatus,
)
from shim_core.queue import TaskQueue
from shim_core.registry import HeartbeatRefused, WorkerRegistry
from tests.helpers import server_ms, wait_until


@pytest.fixture
def registry(shim_connection: RedisConnectionManager, shim_settings: Settings) -> WorkerRegistry:
    return WorkerRegistry(shim_connection, shim_settings)


@pytest.fixture
def trust_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use liveness evidence even when the session's redis-server started moments ago.

    (The registry ignores missing liveness subscribers while the server is younger than
    RESTART_GRACE_S, since after a restart no worker has resubscribed yet.)
    """
    monkeypatch.setattr(registry_module, "RESTART_GRACE_S", 0)


def register(
    registry: WorkerRegistry, worker_id: str, interval: float = 60.0, **fields: object
) -> None:
    registry.register_worker(
        WorkerRegistration(id=worker_id, **fields), heartbeat_interval=interval
    )


def raw(registry: WorkerRegistry, worker_id: str) -> dict[str, str]:
    return registry.client.hgetall(registry.keys.worker(worker_id))


def deadline_of(registry: WorkerRegistry, worker_id: str) -> float | None:
    return registry.client.zscore(registry.keys.workers, worker_id)


def claim(queue: TaskQueue, worker_id: str, count: int = 1, **kwargs: object) -> dict[str, int]:
    """Claim ``count`` code tasks for ``worker_id``; returns task id -> lease token."""
    claims = queue.claim(["code"], worker_id=worker_id, count=count, **kwargs)
    assert len(claims) == count
    return {c.task.id: c.token for c in claims}


# --------------------------------------------------------------- registration
def test_register_records_fields_idle_and_live(registry: WorkerRegistry) -> None:
    """A registered worker keeps its descriptive fields and capabilities, is idle and is live."""
    before = server_ms(registry.client)
    caps = WorkerCapabilities(max_concurrent_tasks=4, supported_task_types=("code", "test"))
    register(
        registry,
        "w1",
        interval=2.0,
        name="alpha",
        host="box-1",
        pid=4242,
        session_id="s-1",
        capabilities=caps,
    )
    after = server_ms(registry.client)

    worker = registry.get_worker("w1")
    assert worker is not None
    assert (worker.id, worker.name, worker.host, worker.pid, worker.session_id) == (
        "w1",
        "alpha",
        "box-1",
        4242,
        "s-1",
    )
    assert worker.status is WorkerStatus.IDLE
    assert worker.capabilities == caps
    assert worker.heartbeat.interval == 2.0
    assert worker.current_task is None
    assert (worker.stats.tasks_completed, worker.stats.tasks_failed) == (0, 0)
    assert before <= worker.registered_at.timestamp() * 1000 <= after
    assert registry.live_worker_ids() == ["w1"]


def test_register_without_name_uses_the_id(registry: WorkerRegistry) -> None:
    """A worker registered without a name is shown by its id."""
    register(registry, "nameless")
    assert registry.get_worker("nameless").name == "nameless"


def test_registering_again_resets_the_worker(registry: WorkerRegistry) -> None:
    """Registering an existing id again makes it idle and live with a fresh record."""
    register(registry, "w1")
    registry.declare_crashed("w1")
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED

    register(registry, "w1")

    assert registry.get_worker("w1").status is WorkerStatus.IDLE
    assert registry.live_worker_ids() == ["w1"]
    assert "crash_reason" not in raw(registry, "w1")


def test_invalid_worker_id_is_refused(registry: WorkerRegistry) -> None:
    """A worker id that is not a valid name is refused before anything is written."""
    with pytest.raises(ConfigError):
        register(registry, "bad id with spaces")
    assert registry.all_workers() == []


def test_status_updates(registry: WorkerRegistry) -> None:
    """update_worker_status and a heartbeat carrying a status both change the worker's status."""
    register(registry, "w1")

    registry.update_worker_status("w1", WorkerStatus.BUSY)
    assert registry.get_worker("w1").status is WorkerStatus.BUSY

    registry.record_heartbeat("w1", status=WorkerStatus.IDLE)
    assert registry.get_worker("w1").status is WorkerStatus.IDLE

    registry.record_heartbeat("w1")  # no status: unchanged
    assert registry.get_worker("w1").status is WorkerStatus.IDLE


# ------------------------------------------------------------------ heartbeats
def test_heartbeat_deadline_is_three_intervals_after_the_last_beat(
    registry: WorkerRegistry,
) -> None:
    """The live set scores a worker by its last beat plus three heartbeat intervals."""
    before = server_ms(registry.client)
    register(registry, "w1", interval=1.5)
    after = server_ms(registry.client)

    first_seen = int(raw(registry, "w1")["last_seen"])
    assert before <= first_seen <= after
    assert deadline_of(registry, "w1") == first_seen + 3 * 1500

    wait_until(lambda: server_ms(registry.client) > first_seen)
    before = server_ms(registry.client)
    registry.record_heartbeat("w1")
    after = server_ms(registry.client)

    seen = int(raw(registry, "w1")["last_seen"])
    assert first_seen < seen
    assert before <= seen <= after
    assert deadline_of(registry, "w1") == seen + 3 * 1500
    assert registry.get_worker("w1").heartbeat.last_seen.timestamp() * 1000 == seen


def test_heartbeat_of_unknown_worker_is_refused(registry: WorkerRegistry) -> None:
    """A heartbeat from a worker the registry never saw is refused as unknown, leases lost."""
    with pytest.raises(HeartbeatRefused) as info:
        registry.record_heartbeat("ghost", [("t1", 7)])
    assert info.value.crashed is False
    assert info.value.lost == ["t1"]
    assert registry.get_worker("ghost") is None


def test_record_heartbeat_renews_leases_and_returns_lost_ones(
    registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """A beat extends the deadline of every lease the worker still holds and lists the others."""
    register(registry, "w1")
    shim_queue.add_many([Task(id="held"), Task(id="done"), Task(id="other")])
    held = claim(shim_queue, "w1", count=2, lease_ms=5_000)
    shim_queue.complete("done", held["done"])

    before = server_ms(registry.client)
    lost = registry.record_heartbeat(
        "w1",
        [("held", held["held"]), ("done", held["done"]), ("other", 999_999)],
        lease_ms=60_000,
    )
    after = server_ms(registry.client)

    assert sorted(lost) == ["done", "other"]
    task = shim_queue.get("held")
    deadline = task.lease_deadline.timestamp() * 1000
    assert before + 60_000 <= deadline <= after + 60_000
    assert shim_queue.client.zscore(shim_queue.keys.active, "held") == deadline
    assert shim_queue.get("other").status is TaskStatus.PENDING  # untouched by the beat
    assert shim_queue.client.zscore(shim_queue.keys.active, "other") is None


def test_concurrent_heartbeats_from_many_workers(registry: WorkerRegistry) -> None:
    """Twenty workers beating ten times each from their own threads all stay live, no errors."""
    ids = [f"w{i:02d}" for i in range(20)]
    start = threading.Barrier(len(ids))

    def life(worker_id: str) -> int:
        register(registry, worker_id)
        start.wait(timeout=10)
        for _ in range(10):
            assert registry.record_heartbeat(worker_id, status=WorkerStatus.BUSY) == []
        return 10

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        beats = list(pool.map(life, ids))

    assert beats == [10] * 20
    assert sorted(registry.live_worker_ids()) == ids
    assert [w.status for w in registry.all_workers()] == [WorkerStatus.BUSY] * 20
    assert registry.detect_crashed_workers(use_liveness=False) == []


# ------------------------------------------------------------ crash detection
def test_missed_heartbeats_crash_the_worker(registry: WorkerRegistry) -> None:
    """A worker that misses three heartbeats is declared crashed and leaves the live set."""
    register(registry, "quick", interval=0.05)
    register(registry, "steady", interval=60.0)

    crashed = wait_until(lambda: registry.detect_crashed_workers(use_liveness=False), timeout=2.0)

    assert [(c.worker_id, c.reason, c.tasks) for c in crashed] == [
        ("quick", "missed its heartbeats", {})
    ]
    assert registry.get_worker("quick").status is WorkerStatus.CRASHED
    assert raw(registry, "quick")["crash_reason"] == "missed its heartbeats"
    assert registry.live_worker_ids() == ["steady"]


def test_heartbeats_keep_a_fast_worker_alive(registry: WorkerRegistry) -> None:
    """A worker that keeps beating within its interval is never declared crashed."""
    register(registry, "w1", interval=0.1)
    end = time.monotonic() + 0.6  # twice the 300 ms deadline
    while time.monotonic() < end:
        registry.record_heartbeat("w1")
        assert registry.detect_crashed_workers(use_liveness=False) == []
        time.sleep(0.02)
    assert registry.live_worker_ids() == ["w1"]


@pytest.mark.usefixtures("trust_liveness")
def test_worker_without_liveness_subscriber_is_suspected_then_crashed(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A worker whose alive channel has no subscriber is suspect on the first scan and declared
    crashed once the liveness grace has passed, long before its heartbeat deadline."""
    registry = WorkerRegistry(shim_connection, shim_settings, liveness_grace_ms=50)
    register(registry, "gone", interval=60.0)

    assert registry.detect_crashed_workers() == []
    assert "suspect_since" in raw(registry, "gone")
    assert registry.live_worker_ids() == ["gone"]

    crashed = wait_until(registry.detect_crashed_workers, timeout=2.0)

    assert [(c.worker_id, c.reason) for c in crashed] == [("gone", "lost its connection")]
    assert registry.get_worker("gone").status is WorkerStatus.CRASHED
    assert registry.live_worker_ids() == []


@pytest.mark.usefixtures("trust_liveness")
def test_worker_with_liveness_subscriber_is_never_crashed_by_liveness(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A worker whose process keeps its alive channel subscribed stays live scan after scan."""
    registry = WorkerRegistry(shim_connection, shim_settings, liveness_grace_ms=50)
    register(registry, "here", interval=60.0)
    with MessageBus(shim_connection, shim_settings) as bus:
        bus.subscribe("alive:here", lambda event, channel: None)
        wait_until(lambda: bus.subscriber_count("alive:here") == 1)

        for _ in range(4):
            assert registry.detect_crashed_workers() == []
            time.sleep(0.03)  # well past the 50 ms grace over the four scans

        assert "suspect_since" not in raw(registry, "here")
        assert registry.get_worker("here").status is WorkerStatus.IDLE
        assert registry.live_worker_ids() == ["here"]


@pytest.mark.usefixtures("trust_liveness")
def test_liveness_subscriber_coming_back_clears_the_suspicion(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A suspect worker whose subscription comes back (a reconnect) is no longer suspect."""
    registry = WorkerRegistry(shim_connection, shim_settings, liveness_grace_ms=60_000)
    register(registry, "blip", interval=60.0)
    assert registry.detect_crashed_workers() == []
    assert "suspect_since" in raw(registry, "blip")

    with MessageBus(shim_connection, shim_settings) as bus:
        bus.subscribe("alive:blip", lambda event, channel: None)
        wait_until(lambda: bus.subscriber_count("alive:blip") == 1)
        assert registry.detect_crashed_workers() == []

    assert "suspect_since" not in raw(registry, "blip")


@pytest.mark.shim_real_redis
def test_liveness_is_ignored_right_after_a_redis_start(
    shim_redis_server_factory, shim_settings: Settings
) -> None:
    """On a server that just (re)started no worker is suspected for a missing subscriber."""
    server = shim_redis_server_factory()
    settings = Settings(redis_url=server.url, namespace=shim_settings.namespace)
    with RedisConnectionManager(server.url) as connection:
        registry = WorkerRegistry(connection, settings, liveness_grace_ms=0)
        register(registry, "w1", interval=60.0)
        assert registry.detect_crashed_workers() == []
        assert registry.detect_crashed_workers() == []
        assert "suspect_since" not in raw(registry, "w1")
        assert registry.live_worker_ids() == ["w1"]


def test_crashed_worker_tasks_are_requeued(registry: WorkerRegistry, shim_queue: TaskQueue) -> None:
    """A crash returns the worker's tasks to pending with a stall counted and voids its leases;
    its next heartbeat is refused as crashed and lists every lease as lost."""
    register(registry, "w1")
    register(registry, "w2")
    shim_queue.add_many([Task(id="a"), Task(id="b"), Task(id="c")])
    held = claim(shim_queue, "w1", count=2)
    other = claim(shim_queue, "w2")

    crashed = registry.declare_crashed("w1")

    assert crashed is not None
    assert crashed.tasks == {"a": "pending", "b": "pending"}
    for task_id in ("a", "b"):
        task = shim_queue.get(task_id)
        assert (task.status, task.stalls, task.lease) == (TaskStatus.PENDING, 1, 0)
    assert shim_queue.get("c").status is TaskStatus.RUNNING
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED
    assert registry.get_worker("w1").current_task is None

    with pytest.raises(HeartbeatRefused) as info:
        registry.record_heartbeat("w1", sorted(held.items()))
    assert info.value.crashed is True
    assert info.value.lost == ["a", "b"]
    assert registry.record_heartbeat("w2", sorted(other.items())) == []
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED


def test_crash_fails_a_task_that_stalled_too_often(
    registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """A task past its max_stalled is failed for good when its worker crashes."""
    register(registry, "w1")
    shim_queue.add(Task(id="fragile", max_stalled=0))
    claim(shim_queue, "w1")

    crashed = registry.declare_crashed("w1")

    assert crashed.tasks == {"fragile": "failed"}
    task = shim_queue.get("fragile")
    assert task.status is TaskStatus.FAILED
    assert "worker w1 declared crashed" in task.result.error


def test_declare_crashed(registry: WorkerRegistry) -> None:
    """declare_crashed crashes a live worker now, and returns None for one that is not live."""
    register(registry, "w1")

    crashed = registry.declare_crashed("w1")

    assert (crashed.worker_id, crashed.reason, crashed.tasks) == ("w1", "declared crashed", {})
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED
    assert registry.declare_crashed("w1") is None
    assert registry.declare_crashed("never-registered") is None


def test_scans_are_idempotent(registry: WorkerRegistry, shim_queue: TaskQueue) -> None:
    """A second scan after a crash reports nothing and counts no second stall."""
    register(registry, "w1", interval=0.05)
    shim_queue.add(Task(id="a"))
    claim(shim_queue, "w1")

    first = wait_until(lambda: registry.detect_crashed_workers(use_liveness=False), timeout=2.0)

    assert [c.tasks for c in first] == [{"a": "pending"}]
    assert registry.detect_crashed_workers(use_liveness=False) == []
    assert registry.detect_crashed_workers() == []
    assert shim_queue.get("a").stalls == 1


# --------------------------------------------------------------------- queries
def test_queries_by_status(registry: WorkerRegistry) -> None:
    """Workers can be looked up one by one, by status, as active / idle, or all at once."""
    for worker_id in ("idle-1", "busy-1", "crashed-1", "off-1"):
        register(registry, worker_id)
    registry.update_worker_status("busy-1", WorkerStatus.BUSY)
    registry.declare_crashed("crashed-1")
    registry.unregister_worker("off-1")

    def ids(workers: list[WorkerRegistration]) -> list[str]:
        return sorted(w.id for w in workers)

    assert registry.get_worker("busy-1").status is WorkerStatus.BUSY
    assert registry.get_worker("nobody") is None
    assert ids(registry.get_active_workers()) == ["busy-1", "idle-1"]
    assert ids(registry.get_idle_workers()) == ["idle-1"]
    assert ids(registry.get_workers_by_status(WorkerStatus.CRASHED)) == ["crashed-1"]
    assert ids(registry.get_workers_by_status(WorkerStatus.CRASHED, WorkerStatus.OFFLINE)) == [
        "crashed-1",
        "off-1",
    ]
    assert [w.id for w in registry.all_workers()] == ["busy-1", "crashed-1", "idle-1", "off-1"]
    assert sorted(registry.live_worker_ids()) == ["busy-1", "idle-1"]


def test_unregister_removes_the_workers_wake_marker(
    registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """A marker left on the wake key of the worker's own queue (a stop that woke nobody) goes
    with the worker: nothing claims from that queue any more."""
    register(registry, "w1")
    shim_queue.wake_worker("w1")
    marker = shim_queue.keys.wake("@w1")
    assert registry.client.exists(marker)

    registry.unregister_worker("w1")

    assert not registry.client.exists(marker)


def test_unregister_marks_offline_and_not_live(registry: WorkerRegistry) -> None:
    """An unregistered worker is offline, out of the live set, kept for queries, and its
    heartbeats are refused."""
    register(registry, "w1")

    assert registry.unregister_worker("w1") is True

    worker = registry.get_worker("w1")
    assert worker.status is WorkerStatus.OFFLINE
    assert registry.live_worker_ids() == []
    assert "offline_at" in raw(registry, "w1")
    assert registry.unregister_worker("unknown") is False
    with pytest.raises(HeartbeatRefused):
        registry.record_heartbeat("w1")
    assert registry.detect_crashed_workers(use_liveness=False) == []
    assert registry.get_worker("w1").status is WorkerStatus.OFFLINE


def test_cleanup_removes_crashed_and_offline_keeps_live(registry: WorkerRegistry) -> None:
    """cleanup_stale_workers deletes old crashed / offline records and keeps live workers."""
    for worker_id in ("live", "crashed", "offline"):
        register(registry, worker_id)
    registry.declare_crashed("crashed")
    registry.unregister_worker("offline")
    newest = max(int(raw(registry, w)["last_seen"]) for w in ("live", "crashed", "offline"))
    wait_until(lambda: server_ms(registry.client) > newest)

    assert registry.cleanup_stale_workers(60_000) == 0  # too recent
    assert registry.cleanup_stale_workers(0) == 2

    assert [w.id for w in registry.all_workers()] == ["live"]
    assert registry.get_worker("crashed") is None
    assert registry.get_worker("offline") is None
    assert registry.live_worker_ids() == ["live"]
    assert registry.cleanup_stale_workers(0) == 0


# ------------------------------------------------------------------ statistics
def test_registry_stats(registry: WorkerRegistry) -> None:
    """Registry stats count workers by status and sum their task statistics."""
    for worker_id in ("a", "b", "c"):
        register(registry, worker_id)
    registry.update_worker_status("b", WorkerStatus.BUSY)
    registry.declare_crashed("c")
    registry.complete_task("a", 100)
    registry.complete_task("a", 50)
    registry.complete_task("b", 30, success=False)

    stats = registry.get_registry_stats()

    assert stats.total == 3
    assert stats.by_status == {"idle": 1, "busy": 1, "crashed": 1}
    assert (stats.tasks_completed, stats.tasks_failed) == (2, 1)
    a = registry.get_worker("a").stats
    assert (a.tasks_completed, a.total_duration, a.avg_duration) == (2, 150.0, 75.0)


def test_empty_registry_stats(registry: WorkerRegistry) -> None:
    """An empty namespace has no workers and zero counts."""
    stats = registry.get_registry_stats()
    assert (stats.total, stats.by_status, stats.tasks_completed, stats.tasks_failed) == (
        0,
        {},
        0,
        0,
    )


def test_complete_and_fail_scripts_keep_worker_statistics(
    registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """Finishing tasks through the queue counts them on the worker that held them and clears
    its current task."""
    register(registry, "w1")
    shim_queue.add_many([Task(id="ok"), Task(id="bad", max_attempts=1)])

    token = claim(shim_queue, "w1")["ok"]
    assert registry.get_worker("w1").current_task.task_id == "ok"
    shim_queue.complete("ok", token, TaskResult(success=True))

    worker = registry.get_worker("w1")
    assert worker.current_task is None
    assert worker.stats.tasks_completed == 1
    assert worker.stats.total_duration == shim_queue.get("ok").actual_duration

    token = claim(shim_queue, "w1")["bad"]
    assert registry.get_worker("w1").current_task.task_id == "bad"
    shim_queue.fail("bad", token, "broken")

    worker = registry.get_worker("w1")
    assert worker.current_task is None
    assert (worker.stats.tasks_completed, worker.stats.tasks_failed) == (1, 1)
    assert registry.get_registry_stats().tasks_failed == 1


def test_claims_by_unregistered_workers_leave_no_record(
    registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """Claiming and completing as a worker id that never registered creates no worker record."""
    shim_queue.add(Task(id="a"))
    token = claim(shim_queue, "anonymous")["a"]
    shim_queue.complete("a", token)
    assert registry.get_worker("anonymous") is None
    assert registry.all_workers() == []


def test_worker_events_reach_bus_subscribers(shim_connection, shim_settings, shim_bus):
    """registered, heartbeat, crashed and offline events decode on the bus."""
    import queue as stdqueue

    from shim_core import Channels, EventType

    seen: stdqueue.Queue = stdqueue.Queue()
    shim_bus.psubscribe(Channels.WORKER_EVENTS, lambda event, channel: seen.put(event))
    wait_until(lambda: shim_connection.get_client().pubsub_numpat() > 0)
    registry = WorkerRegistry(shim_connection, shim_settings)
    for worker_id in ("w-a", "w-b"):
        registry.register_worker(WorkerRegistration(id=worker_id), heartbeat_interval=10)
    registry.record_heartbeat("w-a")
    registry.declare_crashed("w-a")
    registry.unregister_worker("w-b")
    types = [seen.get(timeout=10).type for _ in range(5)]
    assert types == [
        EventType.REGISTERED,
        EventType.REGISTERED,
        EventType.HEARTBEAT,
        EventType.CRASHED,
        EventType.OFFLINE,
    ]
    assert shim_bus.get_event_stats().decode_errors == 0


def test_status_update_cannot_revive_a_crashed_worker(registry):
    """A crashed worker stays crashed under a status update; it must register again."""
    from shim_core.models import WorkerRegistration as Registration

    registry.register_worker(Registration(id="gone"), heartbeat_interval=10)
    registry.declare_crashed("gone")
    assert registry.update_worker_status("gone", WorkerStatus.BUSY) is False
    assert registry.get_worker("gone").status is WorkerStatus.CRASHED
    assert registry.update_worker_status("nobody", WorkerStatus.BUSY) is False
