"""The supervisor on a real Redis: the Supervisor facade, TaskAssigner (seed component 6),
ProgressAggregator (seed component 7) and runs (submit, report, on_failure, cancel, retry)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_shim.fleet import Fleet
from shim_core import cli
from shim_core.bus import MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, forget_embedded
from shim_core.errors import MissingDependency, StaleLease
from shim_core.models import (
    Priority,
    Task,
    TaskResult,
    TaskStatus,
    WorkerCapabilities,
    WorkerRegistration,
)
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.supervisor import PlanError, Supervisor
from shim_core.supervisor.progress import (
    FALLBACK_ESTIMATE,
    ProgressAggregator,
    schedule_makespan,
)
from shim_core.supervisor.runs import (
    RunNotFound,
    RunRecord,
    latest_run_id,
    load_run,
    report_to_json,
)
from shim_core.supervisor.supervisor import RunTimeout
from tests.helpers import wait_until

FleetFactory = Callable[..., Fleet]


# ----------------------------------------------------------------------- helpers
def sim(task_id: str, duration: float = 0.0, steps: int = 2, **fields: Any) -> Task:
    """A task of the ``sim`` executor."""
    params = {"duration": duration, "progress_steps": steps, **fields.pop("params", {})}
    return Task(id=task_id, executor="sim", params=params, **fields)


def register(
    registry: WorkerRegistry,
    worker_id: str,
    *,
    capacity: int = 1,
    types: tuple[str, ...] = ("code", "test"),
    bus: MessageBus | None = None,
) -> None:
    """Register a stand-in worker (no process behind it); with ``bus`` it also holds its liveness
    subscription, so the reapers of a fleet running alongside leave it alone."""
    registry.register_worker(
        WorkerRegistration(
            id=worker_id,
            capabilities=WorkerCapabilities(
                max_concurrent_tasks=capacity, supported_task_types=types
            ),
        ),
        heartbeat_interval=60.0,
    )
    if bus is not None:
        bus.subscribe(f"alive:{worker_id}", lambda event, channel: None)
        wait_until(lambda: bus.subscriber_count(f"alive:{worker_id}") == 1)


def statuses(queue: TaskQueue, run: RunRecord) -> dict[str, str]:
    """Plan id -> status of every task of ``run``."""
    return {
        t.id.split(":", 1)[1]: t.status.value for t in queue.get_many(run.task_ids) if t is not None
    }


@pytest.fixture
def supervisor(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Iterator[Supervisor]:
    sup = Supervisor(shim_connection, shim_settings, reap_interval=0.2)
    yield sup
    sup.stop()


@pytest.fixture
def registry(shim_connection: RedisConnectionManager, shim_settings: Settings) -> WorkerRegistry:
    return WorkerRegistry(shim_connection, shim_settings)


@pytest.fixture
def plan_file(tmp_path: Path) -> Callable[..., str]:
    """Write a plan (a mapping) to a YAML file; returns its path."""

    def write(data: dict[str, Any], name: str = "plan.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def threads(shim_fleet_factory: FleetFactory) -> Callable[[int], Fleet]:
    """Start a thread fleet of N sim workers (fast, any backend)."""
    return lambda n: shim_fleet_factory(workers=n, mode="thread", heartbeat=0.5)


def submit(sup: Supervisor, plan_file: Callable[..., str], data: dict[str, Any]) -> RunRecord:
    return sup.submit(sup.decompose(plan_file(data)))


# ================================================================== TaskAssigner
def test_assign_to_idle_worker(supervisor: Supervisor, registry: WorkerRegistry) -> None:
    """A task is targeted at the idle worker that supports its type and waits in its queue."""
    register(registry, "w1")
    result = supervisor.assign_task(sim("t1"))

    assert (result.task_id, result.status, result.worker_id) == ("t1", "assigned", "w1")
    task = supervisor.queue.get("t1")
    assert task.assigned_to == "w1"
    assert task.status is TaskStatus.PENDING
    assert [t.id for t in supervisor.assigner.get_task_assignments("w1")] == ["t1"]
    assert supervisor.assigner.get_worker_load("w1") == 1
    assert supervisor.assigner.get_unassigned_tasks() == []


def test_queue_when_no_worker_is_available(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """Without a live capable worker with room, a task goes to the shared queue for anyone."""
    first = supervisor.assign_task(sim("nobody"))
    assert (first.status, first.worker_id) == ("queued", None)
    assert first.reason == "no idle capable worker"

    register(registry, "tester", types=("test",))
    wrong_type = supervisor.assign_task(sim("code-task"))
    assert wrong_type.status == "queued"

    register(registry, "coder")
    supervisor.assign_task(sim("fills-coder"))
    full = supervisor.assign_task(sim("coder-full"))
    assert full.status == "queued"

    registry.unregister_worker("tester")
    gone = supervisor.assign_task(sim("tester-gone", type="test"))
    assert gone.status == "queued"
    shared = {t.id for t in supervisor.assigner.get_unassigned_tasks()}
    assert shared == {"nobody", "code-task", "coder-full", "tester-gone"}
    assert {t.id for t in supervisor.assigner.get_unassigned_tasks(["test"])} == {"tester-gone"}
    assert all(supervisor.queue.get(t).assigned_to is None for t in shared)


def test_targeted_tasks_respect_priorities(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """A worker claims its targeted tasks and the shared queue's in strict priority order."""
    register(registry, "w1", capacity=4)
    batch = [
        sim("low", priority=Priority.LOW),
        sim("critical", priority=Priority.CRITICAL),
        sim("normal"),
        sim("high", priority=Priority.HIGH),
    ]
    results = supervisor.assigner.assign_batch(batch)
    assert {r.worker_id for r in results} == {"w1"}
    supervisor.queue.add(sim("shared-high", priority=Priority.HIGH))

    claims = supervisor.queue.claim(["code"], worker_id="w1", count=5)

    assert [c.task.id for c in claims] == ["critical", "high", "shared-high", "normal", "low"]


def test_load_balancing_picks_the_lowest_load_first(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """Across three workers each new task goes to the least-loaded one (ties: lowest id),
    counting both running tasks and tasks waiting in a worker's own queue."""
    for worker_id in ("w1", "w2", "w3"):
        register(registry, worker_id, capacity=3)
    supervisor.queue.add_many(
        [sim("pre-1", assigned_to="w1"), sim("pre-2", assigned_to="w1"), sim("pre-3")]
    )
    supervisor.queue.claim(["code"], worker_id="w2", count=1)  # w1's tasks are not w2's to take
    loads = {w: supervisor.assigner.get_worker_load(w) for w in ("w1", "w2", "w3")}
    assert loads == {"w1": 2, "w2": 1, "w3": 0}

    chosen = [supervisor.assign_task(sim(f"new-{i}")).worker_id for i in range(4)]

    assert chosen == ["w3", "w2", "w3", "w1"]
    loads = {w: supervisor.assigner.get_worker_load(w) for w in ("w1", "w2", "w3")}
    assert loads == {"w1": 3, "w2": 2, "w3": 2}
    assert {t.id for t in supervisor.assigner.get_task_assignments("w2")} == {"pre-3", "new-1"}


def test_batch_assignment_fills_workers_then_queues(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """A batch is spread evenly over the workers up to their capacity and the rest is queued,
    all added in one call."""
    for worker_id in ("w1", "w2", "w3"):
        register(registry, worker_id, capacity=2)

    results = supervisor.assigner.assign_batch([sim(f"b{i}") for i in range(7)])

    assigned = Counter(r.worker_id for r in results if r.status == "assigned")
    assert assigned == {"w1": 2, "w2": 2, "w3": 2}
    assert [r.task_id for r in results if r.status == "queued"] == ["b6"]
    assert supervisor.queue.stats().pending == 7
    assert [t.id for t in supervisor.assigner.get_unassigned_tasks()] == ["b6"]


def test_batch_assignment_is_refused_as_a_whole(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """A batch with a bad dependency writes nothing, not even its valid tasks."""
    register(registry, "w1", capacity=5)
    with pytest.raises(MissingDependency):
        supervisor.assigner.assign_batch([sim("ok"), sim("bad", dependencies=("ghost",))])
    assert supervisor.queue.stats().total == 0
    assert supervisor.assigner.get_worker_load("w1") == 0


def test_rebalance_moves_the_queue_of_a_busy_or_gone_worker(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """Tasks queued behind a worker at capacity move to an idle worker with room, a task targeted
    at a crashed worker goes to the shared queue at once, and a second pass has nothing to
    move."""
    register(registry, "busy", capacity=1)
    register(registry, "idle", capacity=2)
    register(registry, "dead", capacity=1)
    registry.declare_crashed("dead")
    supervisor.queue.add_many(
        [
            sim("running", assigned_to="busy"),
            sim("behind-1", assigned_to="busy"),
            sim("behind-2", assigned_to="busy"),
            sim("orphan", assigned_to="dead"),
        ]
    )
    [claim] = supervisor.queue.claim(["code"], worker_id="busy")
    assert claim.task.id == "running"

    moved = supervisor.assigner.rebalance_tasks()

    assert moved == 2
    assert {t.id for t in supervisor.assigner.get_task_assignments("busy")} == {"running"}
    assert {t.id for t in supervisor.assigner.get_task_assignments("idle")} == {
        "behind-1",
        "behind-2",
    }
    assert [t.id for t in supervisor.assigner.get_unassigned_tasks()] == ["orphan"]
    assert supervisor.assigner.rebalance_tasks() == 0


def test_reassign_pending_and_running_tasks(
    supervisor: Supervisor, registry: WorkerRegistry
) -> None:
    """reassign_task moves a pending task between queues and voids a running task's lease, so
    its first worker's late result is refused."""
    register(registry, "w1", capacity=2)
    register(registry, "w2", capacity=2)
    supervisor.queue.add_many([sim("p", assigned_to="w1"), sim("r")])
    [claim] = supervisor.queue.claim(["code"], worker_id="w1", count=1)
    assert claim.task.id == "p"
    supervisor.queue.add(sim("pending", assigned_to="w1"))

    moved = supervisor.assigner.reassign_task("pending", "w1 is slow", worker_id="w2")
    assert (moved.status, moved.worker_id, moved.reason) == ("assigned", "w2", "w1 is slow")
    assert supervisor.queue.get("pending").assigned_to == "w2"

    released = supervisor.assigner.reassign_task("p", "take it away")
    assert (released.status, released.worker_id) == ("queued", None)
    assert supervisor.queue.get("p").status is TaskStatus.PENDING
    with pytest.raises(StaleLease):
        supervisor.queue.complete("p", claim.token, TaskResult(success=True))


def test_targeted_task_goes_back_to_the_shared_queue_when_its_worker_crashes(
    supervisor: Supervisor,
    registry: WorkerRegistry,
    shim_bus: MessageBus,
    threads: Callable[[int], Fleet],
) -> None:
    """A task targeted at a worker that then crashes (declare_crashed) returns to the shared
    queue and another worker of the fleet completes it."""
    register(registry, "doomed", bus=shim_bus)
    assert supervisor.assign_task(sim("t")).worker_id == "doomed"
    fleet = threads(1)
    assert supervisor.queue.get("t").assigned_to == "doomed"

    crashed = registry.declare_crashed("doomed")

    assert crashed is not None
    assert crashed.tasks == {}
    task = wait_until(
        lambda: (t := supervisor.queue.get("t")).status is TaskStatus.COMPLETE and t, timeout=15
    )
    assert task.worker_id == fleet.workers[0].id
    assert task.assigned_to is None


@pytest.mark.shim_real_redis
def test_sigkilled_worker_loses_its_running_and_its_queued_tasks_to_another(
    shim_fleet_factory: FleetFactory, supervisor: Supervisor
) -> None:
    """A process worker SIGKILLed while it runs one task and has another waiting in its own
    queue: both go back to the fleet and the survivor completes them."""
    fleet = shim_fleet_factory(workers=2, mode="process", heartbeat=0.5)
    victim, survivor = fleet.workers
    supervisor.queue.add(sim("running", 3.0, steps=6, assigned_to=victim.id))
    wait_until(lambda: fleet.worker_running("running") is victim, timeout=30)
    supervisor.queue.add(sim("queued", assigned_to=victim.id))
    assert {t.id for t in supervisor.assigner.get_task_assignments(victim.id)} == {
        "running",
        "queued",
    }
    supervisor.start()

    victim.kill()

    fleet.wait_idle(timeout=60)
    for task in supervisor.queue.get_many(["running", "queued"]):
        assert task.status is TaskStatus.COMPLETE
        assert task.worker_id == survivor.id
    assert supervisor.assigner.get_worker_load(victim.id) == 0


# ============================================================ ProgressAggregator
@pytest.fixture
def aggregator_for(
    shim_bus: MessageBus, registry: WorkerRegistry, shim_queue: TaskQueue
) -> Iterator[Callable[..., ProgressAggregator]]:
    """Build (not start) ProgressAggregators on the test's namespace; stopped afterwards."""
    made: list[ProgressAggregator] = []

    def build(task_ids: list[str], **kwargs: Any) -> ProgressAggregator:
        agg = ProgressAggregator(shim_bus, registry, shim_queue, task_ids, **kwargs)
        made.append(agg)
        return agg

    yield build
    for agg in made:
        agg.stop()


def claim_all(queue: TaskQueue, count: int) -> dict[str, int]:
    return {c.task.id: c.token for c in queue.claim(["code"], worker_id="w", count=count)}


def test_overall_progress_from_events(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """Counts and percent_complete follow the task events: a complete task counts 1, a running
    one its reported fraction, a queued one 0."""
    ids = ["a", "b", "c", "d"]
    shim_queue.add_many([Task(id=i) for i in ids])
    agg = aggregator_for(ids)
    agg.start()
    start = agg.get_overall_progress()
    assert (start.total_tasks, start.queued_tasks, start.percent_complete) == (4, 4, 0.0)
    assert not start.finished

    tokens = claim_all(shim_queue, 2)
    shim_queue.progress("a", tokens["a"], 0.5, "halfway")
    shim_queue.complete("b", tokens["b"])

    p = wait_until(
        lambda: (p := agg.get_overall_progress()).percent_complete == pytest.approx(1.5 / 4) and p
    )
    assert (p.completed_tasks, p.running_tasks, p.queued_tasks, p.failed_tasks) == (1, 1, 2, 0)
    assert p.estimated_time_remaining is None  # no live worker
    assert p.live_workers == 0
    a = agg.get_task_progress("a")
    assert (a.status, a.progress, a.message, a.worker_id) == (
        TaskStatus.RUNNING,
        0.5,
        "halfway",
        "w",
    )
    assert agg.completion_order == ["b"]
    assert agg.get_task_progress("zzz") is None


def test_callbacks_report_completed_failed_and_progress(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """on_task_complete and on_task_failed fire for final outcomes, while a start, a progress
    report and a retry go to on_progress_update."""
    shim_queue.add_many(
        [Task(id="ok"), Task(id="bad", max_attempts=1), Task(id="flaky", max_attempts=2)]
    )
    agg = aggregator_for(["ok", "bad", "flaky"])
    seen: dict[str, list[tuple[str, TaskStatus]]] = {"complete": [], "failed": [], "progress": []}
    agg.on_task_complete(lambda tid, e: seen["complete"].append((tid, e.status)))
    agg.on_task_failed(lambda tid, e: seen["failed"].append((tid, e.status)))
    agg.on_progress_update(lambda tid, e: seen["progress"].append((tid, e.status)))
    agg.start()

    tokens = claim_all(shim_queue, 3)
    shim_queue.complete("ok", tokens["ok"])
    shim_queue.fail("bad", tokens["bad"], "boom")
    shim_queue.fail("flaky", tokens["flaky"], "transient")

    wait_until(lambda: seen["complete"] and seen["failed"])
    wait_until(lambda: ("flaky", TaskStatus.RETRYING) in seen["progress"])
    assert seen["complete"] == [("ok", TaskStatus.COMPLETE)]
    assert seen["failed"] == [("bad", TaskStatus.FAILED)]
    assert ("ok", TaskStatus.RUNNING) in seen["progress"]
    p = agg.get_overall_progress()
    assert (p.completed_tasks, p.failed_tasks, p.queued_tasks) == (1, 1, 1)  # retrying is queued


def test_events_of_untracked_tasks_are_ignored(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """Events of tasks outside the run leave the view untouched."""
    shim_queue.add_many([Task(id="mine"), Task(id="other")])
    agg = aggregator_for(["mine"])
    agg.start()
    tokens = {c.task.id: c.token for c in shim_queue.claim(["code"], worker_id="w", count=2)}
    shim_queue.complete("other", tokens["other"])
    shim_queue.complete("mine", tokens["mine"])
    wait_until(lambda: agg.get_overall_progress().finished)
    assert set(agg.get_overall_progress().task_breakdown) == {"mine"}
    assert agg.completion_order == ["mine"]


@pytest.mark.parametrize(
    ("durations", "deps", "makespans"),
    [
        pytest.param({"a": 2.0, "b": 2.0, "c": 2.0}, {}, (6.0, 4.0, 2.0), id="independent"),
        pytest.param(
            {"a": 1.0, "b": 2.0, "c": 3.0},
            {"b": ("a",), "c": ("b",)},
            (6.0, 6.0, 6.0),
            id="chain",
        ),
        pytest.param(
            {"a": 1.0, "b": 2.0, "c": 3.0, "d": 1.0},
            {"b": ("a",), "c": ("a",), "d": ("b", "c")},
            (7.0, 5.0, 5.0),
            id="diamond",
        ),
        pytest.param(
            {"long": 5.0, "a": 1.0, "b": 1.0},
            {"b": ("a",)},
            (7.0, 5.0, 5.0),
            id="chain-beside-a-long-task",
        ),
        pytest.param({"b": 2.0}, {"b": ("done-already",)}, (2.0, 2.0, 2.0), id="outside-deps"),
        pytest.param({}, {}, (0.0, 0.0, 0.0), id="nothing-left"),
    ],
)
def test_schedule_makespan(
    durations: dict[str, float],
    deps: dict[str, tuple[str, ...]],
    makespans: tuple[float, float, float],
) -> None:
    """The remaining-time model schedules hand-made DAGs over 1, 2 and 3 workers in dependency
    order (dependencies outside the remaining work count as done)."""
    got = tuple(schedule_makespan(durations, deps, workers) for workers in (1, 2, 3))
    assert got == pytest.approx(makespans)


def test_schedule_makespan_treats_no_worker_as_one() -> None:
    """A worker count below one schedules as if one worker were left."""
    assert schedule_makespan({"a": 1.0, "b": 2.0}, {}, 0) == pytest.approx(3.0)


def test_time_remaining_follows_the_chain_workers_and_finished_tasks(
    shim_queue: TaskQueue,
    registry: WorkerRegistry,
    aggregator_for: Callable[..., ProgressAggregator],
) -> None:
    """The estimate shrinks as tasks finish or progress, is bounded below by the dependency
    chain still ahead, and shrinks with more live workers only down to that chain."""
    shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("a",)), Task(id="c")])
    agg = aggregator_for(
        ["a", "b", "c"],
        estimates={"a": 10.0, "b": 10.0, "c": 10.0},
        dependencies={"b": ("a",)},
    )
    agg.start()
    assert agg.get_overall_progress().estimated_time_remaining is None
    assert agg.get_completion_estimate() is None

    register(registry, "w1", capacity=1)
    agg.reconcile()
    assert agg.get_overall_progress().estimated_time_remaining == pytest.approx(30.0)
    register(registry, "w2")
    register(registry, "w3")
    agg.reconcile()
    p = agg.get_overall_progress()
    assert p.live_workers == 3
    assert p.estimated_time_remaining == pytest.approx(20.0)  # a then b, whatever the workers
    before = datetime.now().astimezone()
    estimate = agg.get_completion_estimate()
    assert estimate is not None
    assert estimate > before

    tokens = claim_all(shim_queue, 2)  # a and c
    shim_queue.complete("a", tokens["a"])
    wait_until(lambda: agg.get_overall_progress().estimated_time_remaining == pytest.approx(10.0))
    [b] = shim_queue.claim(["code"], worker_id="w")
    shim_queue.progress("b", b.token, 0.5)
    shim_queue.complete("c", tokens["c"])
    wait_until(lambda: agg.get_overall_progress().estimated_time_remaining == pytest.approx(5.0))
    shim_queue.complete("b", b.token)
    wait_until(lambda: agg.get_overall_progress().estimated_time_remaining == 0.0)


def test_unknown_estimates_fall_back_to_the_default(
    shim_queue: TaskQueue,
    registry: WorkerRegistry,
    aggregator_for: Callable[..., ProgressAggregator],
) -> None:
    """A task without an estimate counts FALLBACK_ESTIMATE seconds, even before it is seen."""
    register(registry, "w1")
    agg = aggregator_for(["never-added"])
    agg.reconcile()
    assert agg.get_overall_progress().estimated_time_remaining == FALLBACK_ESTIMATE


def test_stalled_task_detection(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """A running task silent for longer than the threshold is reported stalled until a progress
    report restarts its clock, and a pending task is never stalled."""
    shim_queue.add_many([Task(id="quiet"), Task(id="waiting")])
    agg = aggregator_for(["quiet", "waiting"], reconcile_interval=0.05)
    [claim] = shim_queue.claim(["code"], worker_id="w")
    agg.start()
    assert agg.detect_stalled_tasks(10.0) == []

    wait_until(lambda: agg.detect_stalled_tasks(0.2) == ["quiet"], timeout=5)

    before = time.monotonic()
    shim_queue.progress("quiet", claim.token, 0.3, "alive")
    entry = wait_until(
        lambda: (e := agg.get_task_progress("quiet")).progress == pytest.approx(0.3) and e
    )
    assert entry.last_update >= before  # the report restarted its silence clock
    wait_until(lambda: agg.detect_stalled_tasks(0.2) == ["quiet"], timeout=5)  # silent again


def test_reconcile_fixes_a_view_that_missed_events(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """Tasks that finished while nobody listened are seen by reconcile(), at start or later."""
    shim_queue.add_many([Task(id="x"), Task(id="y", max_attempts=1), Task(id="z")])
    tokens = claim_all(shim_queue, 3)
    shim_queue.complete("x", tokens["x"])
    shim_queue.fail("y", tokens["y"], "boom")
    late = aggregator_for(["x", "y", "z"])
    late.start()  # subscribes, then reads the state
    p = late.get_overall_progress()
    assert (p.completed_tasks, p.failed_tasks, p.running_tasks) == (1, 1, 1)
    assert p.percent_complete == pytest.approx(2 / 3)

    deaf = aggregator_for(["x", "y", "z"])  # never subscribed: sees nothing by itself
    shim_queue.complete("z", tokens["z"])
    assert deaf.get_overall_progress().task_breakdown == {}
    deaf.reconcile()
    assert deaf.get_overall_progress().finished
    assert deaf.get_overall_progress().percent_complete == 1.0
    assert set(deaf.completion_order) == {"x", "y", "z"}


def test_reconcile_records_missed_completions_in_completion_order(
    shim_queue: TaskQueue, aggregator_for: Callable[..., ProgressAggregator]
) -> None:
    """Tasks that completed before the aggregator listened enter completion_order by their
    completion time, not by their position in the run."""
    shim_queue.add_many([Task(id="first-in-plan"), Task(id="second-in-plan")])
    tokens = claim_all(shim_queue, 2)
    shim_queue.complete("second-in-plan", tokens["second-in-plan"])
    time.sleep(0.01)  # completed_at has millisecond resolution
    shim_queue.complete("first-in-plan", tokens["first-in-plan"])
    agg = aggregator_for(["first-in-plan", "second-in-plan"])
    agg.reconcile()
    assert agg.completion_order == ["second-in-plan", "first-in-plan"]


# ========================================================================== runs
AUTH_LIKE = {
    "name": "small",
    "defaults": {"executor": "sim", "params": {"duration": 0.0, "progress_steps": 1}},
    "tasks": [
        # schema takes a moment, so a run's aggregator is listening before anything completes
        {"id": "schema", "estimate": 2, "params": {"duration": 0.2, "progress_steps": 1}},
        {"id": "model", "deps": ["schema"], "estimate": 3},
        {"id": "docs", "type": "document"},
    ],
}


def test_submit_creates_the_run_record(
    supervisor: Supervisor, plan_file: Callable[..., str]
) -> None:
    """submit writes a run record (name, waves, estimates, plan) and enqueues the plan's tasks
    as ``<run>:<id>``, dependencies and session included."""
    run = submit(supervisor, plan_file, AUTH_LIKE)

    assert len(run.run_id) == 10
    assert run.name == "small"
    assert run.task_ids == tuple(f"{run.run_id}:{i}" for i in ("schema", "model", "docs"))
    assert run.waves == (("schema", "docs"), ("model",))
    assert run.estimates == {"schema": 2.0, "model": 3.0, "docs": 0.0}
    assert run.plan["critical_path"] == ["schema", "model"]
    assert run.created_at.tzinfo is not None
    assert load_run(supervisor.queue, run.run_id) == run
    assert latest_run_id(supervisor.queue) == run.run_id
    model = supervisor.queue.get(f"{run.run_id}:model")
    assert model.dependencies == (f"{run.run_id}:schema",)
    assert (model.run_id, model.context.session_id) == (run.run_id, run.run_id)
    assert model.estimated_duration == 3000
    assert model.status is TaskStatus.WAITING
    assert model.on_failure is None
    assert statuses(supervisor.queue, run) == {
        "schema": "pending",
        "model": "waiting",
        "docs": "pending",
    }
    with pytest.raises(RunNotFound, match="nope"):
        load_run(supervisor.queue, "nope")


def test_the_same_plan_runs_twice_side_by_side(
    supervisor: Supervisor, plan_file: Callable[..., str]
) -> None:
    """Two submissions of one plan are two runs with their own task ids."""
    first = submit(supervisor, plan_file, AUTH_LIKE)
    second = submit(supervisor, plan_file, AUTH_LIKE)
    assert first.run_id != second.run_id
    assert not set(first.task_ids) & set(second.task_ids)
    assert supervisor.queue.stats().total == 6


def test_run_report_fields_timestamps_and_completion_order(
    supervisor: Supervisor, plan_file: Callable[..., str], threads: Callable[[int], Fleet]
) -> None:
    """A finished run's report: ok, summary, waves, duration, and per task (in completion
    order) status, attempts, worker, ISO 8601 UTC timestamps, duration and result."""
    fleet = threads(2)
    run = submit(supervisor, plan_file, AUTH_LIKE)
    updates: list[Any] = []

    report = supervisor.wait(run.run_id, timeout=30, on_update=updates.append)

    assert updates
    assert updates[-1].finished
    assert supervisor.get_overall_progress().percent_complete == 1.0
    assert (report.run_id, report.name, report.ok) == (run.run_id, "small", True)
    assert report.summary == {"complete": 3}
    assert report.waves == run.waves
    order = [t.id for t in report.tasks]
    assert sorted(order) == ["docs", "model", "schema"]
    assert order.index("schema") < order.index("model")
    data = report.to_dict()
    assert list(data) == [
        "run_id",
        "name",
        "ok",
        "summary",
        "duration_ms",
        "waves",
        "tasks",
        "cost_usd",
        "merge",
    ]
    assert data["waves"] == [["schema", "docs"], ["model"]]
    assert data["duration_ms"] >= 0
    workers = {w.id for w in fleet.workers}
    for task in data["tasks"]:
        assert list(task) == [
            "id",
            "status",
            "attempts",
            "worker",
            "started_at",
            "completed_at",
            "duration_ms",
            "result",
        ]
        assert (task["status"], task["attempts"]) == ("complete", 1)
        assert task["worker"] in workers
        assert task["started_at"].endswith("Z")
        assert task["completed_at"].endswith("Z")
        started = datetime.fromisoformat(task["started_at"])
        completed = datetime.fromisoformat(task["completed_at"])
        assert started.utcoffset().total_seconds() == 0
        assert started <= completed
        assert task["duration_ms"] == int((completed - started).total_seconds() * 1000)
        assert list(task["result"]) == ["success", "output", "files_modified", "error"]
        assert task["result"]["success"] is True
        assert task["result"]["error"] is None
    assert report_to_json(report).startswith('{"run_id": ')


def test_on_failure_continue_runs_the_dependents_of_a_failed_task(
    supervisor: Supervisor, plan_file: Callable[..., str], threads: Callable[[int], Fleet]
) -> None:
    """With on_failure 'continue' a task that fails for good still releases its dependents."""
    threads(2)
    run = submit(
        supervisor,
        plan_file,
        {
            "on_failure": "continue",
            "defaults": {"executor": "sim"},
            "tasks": [
                {"id": "bad", "max_attempts": 1, "params": {"fail_first": 9, "duration": 0.4}},
                {"id": "after-bad", "deps": ["bad"]},
                {"id": "after-that", "deps": ["after-bad"]},
            ],
        },
    )
    assert supervisor.queue.get(f"{run.run_id}:bad").on_failure == "continue"

    report = supervisor.wait(run.run_id, timeout=30)

    assert not report.ok
    assert report.summary == {"failed": 1, "complete": 2}
    assert [t.id for t in report.tasks] == ["bad", "after-bad", "after-that"]
    bad = report.tasks[0]
    assert bad.result is not None
    assert "simulated failure" in (bad.result.error or "")


def test_on_failure_cancel_dependents_cancels_them(
    supervisor: Supervisor, plan_file: Callable[..., str], threads: Callable[[int], Fleet]
) -> None:
    """With the default on_failure every transitive dependent of a failed task is cancelled
    (never run) while independent tasks complete."""
    threads(2)
    run = submit(
        supervisor,
        plan_file,
        {
            "defaults": {"executor": "sim"},
            "tasks": [
                {"id": "bad", "max_attempts": 1, "params": {"fail_first": 9}},
                {"id": "child", "deps": ["bad"]},
                {"id": "grandchild", "deps": ["child"]},
                {"id": "independent"},
            ],
        },
    )

    report = supervisor.wait(run.run_id, timeout=30)

    assert report.summary == {"failed": 1, "cancelled": 2, "complete": 1}
    by_id = {t.id: t for t in report.tasks}
    for cancelled in ("child", "grandchild"):
        entry = by_id[cancelled]
        assert (entry.status, entry.attempts, entry.worker, entry.started_at) == (
            "cancelled",
            0,
            None,
            None,
        )
        assert entry.result is not None
        assert "failed" in (entry.result.error or "")
    assert by_id["child"].result.error == f"dependency {run.run_id}:bad failed"


def test_cancel_run_cancels_every_unfinished_task(
    supervisor: Supervisor, plan_file: Callable[..., str]
) -> None:
    """cancel_run cancels every unfinished task of the run and nothing of another run, so a
    second call finds nothing left."""
    run = submit(supervisor, plan_file, AUTH_LIKE)
    other = submit(supervisor, plan_file, AUTH_LIKE)

    supervisor.cancel_run(run.run_id)

    assert set(statuses(supervisor.queue, run).values()) == {"cancelled"}
    assert set(statuses(supervisor.queue, other).values()) == {"pending", "waiting"}
    assert supervisor.cancel_run(run.run_id) == 0
    report = supervisor.report(run)
    assert report.summary == {"cancelled": 3}
    assert not report.ok


def test_cancel_run_returns_how_many_tasks_it_cancelled(
    supervisor: Supervisor, plan_file: Callable[..., str]
) -> None:
    """cancel_run returns the number of tasks it cancelled (3: schema, its dependent model,
    docs)."""
    run = submit(supervisor, plan_file, AUTH_LIKE)
    assert supervisor.cancel_run(run.run_id) == 3


def test_retry_a_failed_task_and_a_run(
    supervisor: Supervisor,
    plan_file: Callable[..., str],
    threads: Callable[[int], Fleet],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A task that failed for good completes after queue.retry, and retrying its run (``shim
    retry RUN``) runs the other failed task and then its cancelled dependent."""
    monkeypatch.setenv("SHIM_SIM_FAIL_RATE", "1")  # every simulated attempt fails
    threads(2)
    run = submit(
        supervisor,
        plan_file,
        {
            "defaults": {"executor": "sim", "max_attempts": 1},
            "tasks": [{"id": "solo"}, {"id": "root"}, {"id": "leaf", "deps": ["root"]}],
        },
    )
    first = supervisor.wait(run.run_id, timeout=30)
    assert first.summary == {"failed": 2, "cancelled": 1}
    monkeypatch.delenv("SHIM_SIM_FAIL_RATE")

    solo = f"{run.run_id}:solo"
    assert supervisor.queue.retry(solo) is TaskStatus.PENDING
    task = wait_until(
        lambda: (t := supervisor.queue.get(solo)).status is TaskStatus.COMPLETE and t, timeout=15
    )
    assert (task.attempts, task.result.success) == (1, True)

    settings = supervisor.settings
    target = ["--redis", settings.redis_url, "--namespace", settings.namespace]
    cli.main(["retry", run.run_id, *target])
    assert f"retrying 2 task(s) of run {run.run_id}" in capsys.readouterr().out

    again = supervisor.wait(run.run_id, timeout=30)
    assert again.ok
    assert again.summary == {"complete": 3}
    assert {t.id: t.attempts for t in again.tasks} == {"solo": 1, "root": 1, "leaf": 1}


def test_retrying_a_dependent_of_a_failed_task_is_refused_until_the_dependency_is_retried(
    shim_queue: TaskQueue,
) -> None:
    """A cancelled dependent of a task that failed for good cannot be retried alone (it would
    wait for ever); once the dependency is retried, it can, and it waits for it."""
    from shim_core import InvalidTransition

    shim_queue.add_many([Task(id="dep", max_attempts=1), Task(id="child", dependencies=("dep",))])
    [claim] = shim_queue.claim(["code"], worker_id="w")
    shim_queue.fail("dep", claim.token, "boom")
    assert shim_queue.get("child").status is TaskStatus.CANCELLED

    with pytest.raises(InvalidTransition, match="dependency dep is failed"):
        shim_queue.retry("child")
    assert shim_queue.retry("dep") is TaskStatus.PENDING
    assert shim_queue.retry("child") is TaskStatus.WAITING


def test_execute_tasks_returns_reports_in_completion_order(
    supervisor: Supervisor, threads: Callable[[int], Fleet]
) -> None:
    """execute_tasks runs Tasks with local ids and dependencies as one run and returns their
    reports (plan ids) in completion order."""
    threads(2)
    reports = supervisor.execute_tasks(
        [
            sim("fetch", 0.1, title="Fetch the data"),
            sim("parse", 0.0, dependencies=("fetch",), max_attempts=2),
            sim("index", 0.0, dependencies=("parse",), params={"output": "indexed"}),
            Task(id="note", type="document", executor="sim", timeout_ms=5000),
        ],
        name="pipeline",
        timeout=30,
    )

    order = [r.id for r in reports]
    assert sorted(order) == ["fetch", "index", "note", "parse"]
    assert order.index("fetch") < order.index("parse") < order.index("index")
    assert {r.status for r in reports} == {"complete"}
    assert reports[order.index("index")].result.output == "indexed"
    run_id = latest_run_id(supervisor.queue)
    assert load_run(supervisor.queue, run_id).name == "pipeline"
    assert supervisor.queue.get(f"{run_id}:parse").max_attempts == 2
    assert supervisor.queue.get(f"{run_id}:note").timeout_ms == 5000


def test_execute_tasks_refuses_bad_input_before_writing(supervisor: Supervisor) -> None:
    """A dependency cycle or an unknown dependency is refused and nothing is enqueued."""
    with pytest.raises(PlanError, match="dependency cycle"):
        supervisor.execute_tasks([sim("a", dependencies=("b",)), sim("b", dependencies=("a",))])
    with pytest.raises(PlanError, match="unknown task 'ghost'"):
        supervisor.execute_tasks([sim("a", dependencies=("ghost",))])
    assert supervisor.queue.stats().total == 0
    assert latest_run_id(supervisor.queue) is None


def test_wait_times_out_without_workers(
    supervisor: Supervisor, plan_file: Callable[..., str]
) -> None:
    """wait raises RunTimeout when the run is not finished in time (no worker is running)."""
    run = submit(supervisor, plan_file, AUTH_LIKE)
    with pytest.raises(RunTimeout, match=run.run_id):
        supervisor.wait(run.run_id, timeout=0.3, interval=0.05)


def test_supervisor_lifecycle_and_recovery_report(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    registry: WorkerRegistry,
    shim_bus: MessageBus,
) -> None:
    """As a context manager the supervisor runs a reaper that declares a worker which missed
    its heartbeats crashed and requeues its task (detect_and_recover runs a pass on demand)."""
    register(registry, "silent", bus=shim_bus)
    queue = TaskQueue(shim_connection, shim_settings)
    queue.add(sim("held"))
    queue.claim(["code"], worker_id="silent")
    registry.client.zadd(registry.keys.workers, {"silent": 0})  # heartbeat deadline long past
    with Supervisor(shim_connection, shim_settings, reap_interval=0.05) as sup:
        assert sup.get_overall_progress() is None
        sup.start()  # idempotent
        report = wait_until(lambda: (r := sup.get_recovery_report()).reassigned_tasks and r)
        assert report.reassigned_tasks == ["held"]
        assert [c.worker_id for c in report.crashed_workers] == ["silent"]
        assert sup.recovery.total.crashed_workers == 1
        assert sup.detect_and_recover().empty
    sup.stop()  # stopping twice is harmless
    assert queue.get("held").status is TaskStatus.PENDING
    assert queue.get("held").stalls == 1


def test_supervisor_recovers_a_silent_worker_on_the_embedded_store() -> None:
    """On the embedded store too, a reaper pass requeues the task of a worker that missed its
    heartbeats and has no liveness subscriber (its process is gone)."""
    name = uuid.uuid4().hex
    settings = Settings(redis_url=f"embedded://{name}", namespace="embedded-reaper")
    connection = RedisConnectionManager(settings.redis_url)
    supervisor = Supervisor(connection, settings)
    try:
        register(supervisor.registry, "silent")
        supervisor.queue.add(sim("held"))
        supervisor.queue.claim(["code"], worker_id="silent")
        supervisor.registry.client.zadd(supervisor.registry.keys.workers, {"silent": 0})

        report = supervisor.detect_and_recover()

        assert report.reassigned_tasks == ["held"]
    finally:
        supervisor.stop()
        connection.disconnect()
        forget_embedded(name)


def test_recovery_report_says_whether_a_checkpoint_exists(
    supervisor: Supervisor, registry: WorkerRegistry, shim_connection: RedisConnectionManager
) -> None:
    """The supervisor's recovery report marks a requeued task that has a checkpoint as
    resumable from it."""
    register(registry, "silent")
    supervisor.queue.add(sim("held"))
    [claim] = supervisor.queue.claim(["code"], worker_id="silent")
    backend = supervisor.plugins.backends["redis"].create(shim_connection, supervisor.settings)
    CheckpointStore(backend, supervisor.queue).save("held", claim.token, {"step": 2})
    registry.client.zadd(registry.keys.workers, {"silent": 0})  # heartbeat deadline long past

    report = supervisor.detect_and_recover()

    assert report.reassigned_tasks == ["held"]
    assert report.resumed_from_checkpoint == {"held": True}


def test_decompose_a_request_into_a_plan(supervisor: Supervisor) -> None:
    """decompose turns a numbered request into tasks, dependencies and waves."""
    plan = supervisor.decompose("Auth:\n1. Design schema\n2. Build API after 1\n3. Write docs")
    assert plan.plan.name == "Auth"
    assert plan.waves == (("1", "3"), ("2",))
    assert [t.type for t in plan.plan.tasks] == ["code", "code", "document"]
