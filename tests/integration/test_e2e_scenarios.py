"""The seed's four end-to-end scenarios on a fleet of real ``shim worker`` processes: parallel
execution, dependent execution, worker crash recovery and progress aggregation.

Each scenario prints its measured duration (``pytest -s`` shows it) and, when the environment
variable ``SHIM_E2E_TIMINGS`` names a file, merges it into that JSON file as
``{scenario: seconds}``. The assertions are about behaviour, never about wall-clock bounds.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import Task, TaskStatus
from shim_core.supervisor import Supervisor
from shim_core.supervisor.runs import TaskReport
from tests.helpers import wait_until

pytestmark = pytest.mark.shim_real_redis

TIMINGS_ENV = "SHIM_E2E_TIMINGS"
FleetFactory = Callable[..., Fleet]


def record_timing(scenario: str, seconds: float) -> None:
    """Print a scenario's duration and merge it into the $SHIM_E2E_TIMINGS file, if set (under
    a file lock, so parallel test processes do not lose each other's entries)."""
    print(f"\nE2E scenario {scenario}: {seconds:.2f} s")
    target = os.environ.get(TIMINGS_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        timings: dict[str, Any] = json.loads(text) if text.strip() else {}
        timings[scenario] = round(seconds, 3)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(timings, indent=2, sort_keys=True) + "\n")


def sim(task_id: str, duration: float, steps: int = 4, **fields: Any) -> Task:
    return Task(
        id=task_id,
        executor="sim",
        params={"duration": duration, "progress_steps": steps},
        **fields,
    )


def overlap(a: TaskReport, b: TaskReport) -> bool:
    """Whether two executions' [started_at, completed_at] intervals overlap."""
    assert a.started_at is not None
    assert a.completed_at is not None
    assert b.started_at is not None
    assert b.completed_at is not None
    return a.started_at < b.completed_at and b.started_at < a.completed_at


@pytest.fixture
def supervisor(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Iterator[Supervisor]:
    sup = Supervisor(shim_connection, shim_settings, reap_interval=0.2)
    yield sup
    sup.stop()


@pytest.fixture
def processes(shim_fleet_factory: FleetFactory) -> Callable[[int], Fleet]:
    """Start N ``shim worker`` processes running the sim executor."""
    return lambda n: shim_fleet_factory(workers=n, mode="process", heartbeat=0.5)


def test_scenario_1_parallel_execution(
    processes: Callable[[int], Fleet], supervisor: Supervisor
) -> None:
    """Three independent ~2 s tasks on three workers run at the same time: every pair of
    execution intervals overlaps, each on its own worker."""
    fleet = processes(3)
    start = time.monotonic()

    reports = supervisor.execute_tasks(
        [sim(f"task-{i}", 2.0) for i in (1, 2, 3)], name="parallel", timeout=60
    )

    record_timing("1-parallel-execution", time.monotonic() - start)
    assert [r.status for r in reports] == ["complete"] * 3
    for a, b in itertools.combinations(reports, 2):
        assert overlap(a, b), (a, b)
    assert {r.worker for r in reports} == {w.id for w in fleet.workers}


def test_scenario_2_dependent_execution(
    processes: Callable[[int], Fleet], supervisor: Supervisor
) -> None:
    """With 2 and 3 after 1 and 4 after 2, the results in completion order are 1, then 2 and 3
    (run in parallel) in either order, then 4."""
    processes(3)
    start = time.monotonic()

    reports = supervisor.execute_tasks(
        [
            sim("1", 0.5),
            sim("2", 0.5, dependencies=("1",)),
            sim("3", 0.5, dependencies=("1",)),
            sim("4", 0.5, dependencies=("2",)),
        ],
        name="dependent",
        timeout=60,
    )

    record_timing("2-dependent-execution", time.monotonic() - start)
    order = [r.id for r in reports]
    assert order[0] == "1"
    assert set(order[1:3]) == {"2", "3"}
    assert order[3] == "4"
    by_id = {r.id: r for r in reports}
    assert overlap(by_id["2"], by_id["3"])
    for before, after in (("1", "2"), ("1", "3"), ("2", "4")):
        assert by_id[before].completed_at <= by_id[after].started_at


def test_scenario_3_worker_crash_recovery(
    processes: Callable[[int], Fleet], supervisor: Supervisor
) -> None:
    """A long task assigned to a worker that is SIGKILLed mid-task: the supervisor's reaper
    (the only one left running) reports it reassigned, and another worker completes it,
    resuming from the victim's last checkpoint."""
    fleet = processes(1)
    [victim] = fleet.workers
    supervisor.start()
    start = time.monotonic()
    assignment = supervisor.assign_task(sim("long", 3.0, steps=6))
    assert (assignment.status, assignment.worker_id) == ("assigned", victim.id)
    wait_until(lambda: supervisor.queue.get("long").progress >= 2 / 6, timeout=30)

    victim.kill()

    report = wait_until(
        lambda: "long" in (r := supervisor.get_recovery_report()).reassigned_tasks and r,
        timeout=30,
    )
    assert [c.worker_id for c in report.crashed_workers] == [victim.id]
    assert report.crashed_workers[0].tasks == {"long": "pending"}
    rescuer = fleet.add_worker()
    task = wait_until(
        lambda: (t := supervisor.queue.get("long")).status is TaskStatus.COMPLETE and t,
        timeout=60,
    )
    record_timing("3-worker-crash-recovery", time.monotonic() - start)
    assert task.worker_id == rescuer.id != victim.id
    assert (task.attempts, task.stalls) == (2, 1)
    # progress 2/6 is reported just before step 2's checkpoint: step 1's is there at least
    assert task.result.output["resumed_from"] >= 1
    assert fleet.registry.get_worker(victim.id).status.value == "crashed"


def test_scenario_4_progress_aggregation(
    processes: Callable[[int], Fleet], supervisor: Supervisor, tmp_path: Path
) -> None:
    """While three tasks run the overall progress is above 0 with three running, it rises as
    they report progress, and it ends at 100 %."""
    processes(3)
    plan = tmp_path / "progress.yaml"
    plan.write_text(
        "defaults: {executor: sim, params: {duration: 2.0, progress_steps: 4}}\n"
        "tasks: [{id: a}, {id: b}, {id: c}]\n",
        encoding="utf-8",
    )
    start = time.monotonic()
    run = supervisor.submit(supervisor.decompose(str(plan)))
    aggregator = supervisor.watch(run)

    first = wait_until(
        lambda: (
            (p := aggregator.get_overall_progress()).running_tasks == 3
            and p.percent_complete > 0
            and p
        ),
        timeout=30,
    )
    later = wait_until(
        lambda: (
            (p := aggregator.get_overall_progress()).percent_complete > first.percent_complete and p
        ),
        timeout=30,
    )
    report = supervisor.wait(run.run_id, timeout=60)
    final = supervisor.get_overall_progress()

    record_timing("4-progress-aggregation", time.monotonic() - start)
    assert 0 < first.percent_complete < later.percent_complete <= final.percent_complete == 1.0
    assert first.live_workers == 3
    assert first.estimated_time_remaining is not None
    assert final.finished
    assert final.estimated_time_remaining == 0.0
    assert report.ok
    assert report.summary == {"complete": 3}
