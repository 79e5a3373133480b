"""Runs as the dashboard shows them: a summary per run (counts, progress, ETA, cost) and one run's
tasks by DAG waves, as JSON-able dicts.

The static part of a run (titles, types, dependencies, waves, estimates) comes from its record;
only the moving part is read from the tasks, so a 5,000-task run costs one pipelined read.

Records and tasks are untrusted data: a task that does not decode is refused alone (counted and
drawn as ``corrupt``), and a run whose record does not decode is listed with an ``error`` instead
of its totals; neither takes the other runs down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from shim_core.dashboard.encoding import finite
from shim_core.errors import ConnectionFailed, CorruptTask, ShimError
from shim_core.models import Task, TaskStatus
from shim_core.queue import TaskQueue, TaskState
from shim_core.supervisor.progress import FALLBACK_ESTIMATE, schedule_makespan
from shim_core.supervisor.runs import CorruptRun, RunNotFound, RunRecord, load_run, plan_id_of

T = TypeVar("T")

#: Runs the overview lists (newest first).
RUNS_LISTED = 20
#: Corrupt tasks a run's read skips one by one (each costs one more read) before giving up.
MAX_CORRUPT = 20
#: The status shown for a task whose stored hash does not decode.
CORRUPT = "corrupt"
_QUEUED = ("waiting", "pending", "retrying")
_RUNNING = ("claimed", "running")


def ms(value: datetime | None) -> int | None:
    """Epoch milliseconds of ``value`` (None stays None): what the page's clock reads."""
    return None if value is None else int(value.timestamp() * 1000)


def summarize(
    record: RunRecord,
    states: Sequence[TaskState | Task],
    live_workers: int,
    corrupt: Sequence[str] = (),
) -> dict[str, Any]:
    """Totals of one run: counts by status, the tasks finished (complete, failed or cancelled:
    what 100 % means), running and queued, fraction done (running tasks by their progress),
    the estimated seconds left over ``live_workers`` (None: no live worker), cost and budget.
    ``corrupt`` tasks are counted apart and as still to do."""
    counts: dict[str, int] = {}
    done = 0.0
    left: dict[str, float] = {}
    seen = set()
    for s in states:
        seen.add(s.id)
        counts[s.status.value] = counts.get(s.status.value, 0) + 1
        final = s.status.is_final
        progress = 1.0 if s.status is TaskStatus.COMPLETE else _fraction(s.progress)
        done += 1.0 if final else progress
        if not final:
            left[s.id] = _estimate(record, s.id) * (1 - progress)
    for task_id in record.task_ids:
        if task_id not in seen:  # removed (cleaned) tasks count as waiting, as in shim status
            left[task_id] = _estimate(record, task_id)
    if corrupt:
        counts[CORRUPT] = len(corrupt)
    total = len(record.task_ids)
    finished = not left
    eta = 0.0 if finished else None
    if left and live_workers > 0:
        eta = finite(schedule_makespan(left, record.dependencies(), live_workers))
    return {
        "run_id": record.run_id,
        "name": record.name,
        "created_at": ms(record.created_at),
        "total": total,
        "counts": counts,
        "finished_tasks": sum(counts.get(s.value, 0) for s in TaskStatus if s.is_final),
        "running_tasks": sum(counts.get(s, 0) for s in _RUNNING),
        "queued_tasks": sum(counts.get(s, 0) for s in _QUEUED),
        "percent": min(max(done / total, 0.0), 1.0) if total else 1.0,
        "eta_s": eta,
        "finished": finished,
        "ok": finished and counts.get("complete", 0) == total,
        "cost_usd": round(finite(record.cost_usd, 0.0) or 0.0, 6),
        "budget_usd": finite(record.budget_usd),
    }


def _fraction(value: float) -> float:
    return min(max(finite(value, 0.0) or 0.0, 0.0), 1.0)


def _estimate(record: RunRecord, task_id: str) -> float:
    seconds = finite(record.estimates.get(plan_id_of(task_id)), FALLBACK_ESTIMATE)
    return max(seconds or 0.0, 0.0)


def run_summaries(queue: TaskQueue, live_workers: int, limit: int = RUNS_LISTED) -> list[Any]:
    """Summaries of the runs submitted last, newest first (records gone meanwhile left out; a
    run that does not decode is listed with its ``error``)."""
    found = []
    for run_id in queue.run_ids(limit):
        try:
            found.append(run_summary(queue, run_id, live_workers))
        except RunNotFound:
            continue
        except CorruptRun as exc:
            found.append({"run_id": run_id, "error": str(exc)})
    return found


def run_summary(queue: TaskQueue, run_id: str, live_workers: int) -> dict[str, Any]:
    """The summary of one run (RunNotFound when there is no such run, CorruptRun when it does
    not decode)."""
    record = load_record(queue, run_id)
    states, corrupt = read_states(queue, record)
    return _decoded(run_id, lambda: summarize(record, states, live_workers, corrupt))


def run_detail(queue: TaskQueue, run_id: str, live_workers: int) -> dict[str, Any]:
    """One run: its summary, its waves of plan ids and a row per task (plan order).

    Reads only the moving fields of each task (two pipelined reads for 5,000 tasks), plus the
    recorded results of agent tasks (for their cost)."""
    record = load_record(queue, run_id)
    states, corrupt = read_states(queue, record)

    def detail() -> dict[str, Any]:
        planned = {str(t.get("id")): t for t in record.plan.get("tasks", ()) if isinstance(t, dict)}
        agents = [
            s.id for s in states if planned.get(plan_id_of(s.id), {}).get("executor") == "agent"
        ]
        costs = _costs(queue, agents)
        wave_of = {pid: i for i, wave in enumerate(record.waves) for pid in wave}
        rows = [
            _row(s, planned.get(plan_id_of(s.id), {}), wave_of, costs.get(s.id)) for s in states
        ]
        for task_id in corrupt:
            pid = plan_id_of(task_id)
            rows.append(_planned_row(pid, planned.get(pid, {}), wave_of) | {"status": CORRUPT})
        return {
            "summary": summarize(record, states, live_workers, corrupt),
            "waves": [list(w) for w in record.waves],
            "tasks": rows,
        }

    return _decoded(run_id, detail)


def load_record(queue: TaskQueue, run_id: str) -> RunRecord:
    """The run's record: RunNotFound when there is none, CorruptRun when it does not decode."""
    return _decoded(run_id, lambda: _checked(load_run(queue, run_id)))


def read_states(queue: TaskQueue, record: RunRecord) -> tuple[list[TaskState], list[str]]:
    """The states of the run's tasks and the ids of those that do not decode, refused one at a
    time (CorruptRun beyond :data:`MAX_CORRUPT`)."""
    ids, corrupt = list(record.task_ids), list[str]()
    while True:
        try:
            return queue.states(ids), corrupt
        except CorruptTask as exc:
            if exc.task_id not in ids or len(corrupt) >= MAX_CORRUPT:
                raise CorruptRun(record.run_id, f"{exc} (and more)") from exc
            ids.remove(exc.task_id)
            corrupt.append(exc.task_id)


def _costs(queue: TaskQueue, task_ids: list[str]) -> dict[str, float | None]:
    """What each agent task's result says it cost (results that do not decode left out)."""
    ids = list(task_ids)
    while ids and len(task_ids) - len(ids) <= MAX_CORRUPT:
        try:
            return {k: finite(r.cost_usd) for k, r in queue.results(ids).items()}
        except CorruptTask as exc:
            if exc.task_id not in ids:
                raise
            ids.remove(exc.task_id)
    return {}


def _decoded(run_id: str, read: Callable[[], T]) -> T:
    """``read()``, its decoding errors (a record or a plan of the wrong shape) as CorruptRun."""
    try:
        return read()
    except (ConnectionFailed, RunNotFound, CorruptRun):
        raise
    except (ShimError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptRun(run_id, f"{exc.__class__.__name__}: {str(exc)[:200]}") from exc


def _checked(record: RunRecord) -> RunRecord:
    """``record`` when its fields have the shapes the views use (TypeError otherwise)."""
    if not all(isinstance(t, str) for t in record.task_ids):
        raise TypeError("task ids")
    if not all(isinstance(p, str) for wave in record.waves for p in wave):
        raise TypeError("waves")
    if not isinstance(record.estimates, dict) or not isinstance(record.plan, dict):
        raise TypeError("estimates or plan")
    return record


def _row(
    task: TaskState, planned: dict[str, Any], wave_of: dict[str, int], cost: float | None
) -> dict[str, Any]:
    """What a DAG node shows of a task (None values left out: 5,000 rows stay small)."""
    row = _planned_row(plan_id_of(task.id), planned, wave_of) | {
        "status": task.status.value,
        "progress": 1.0 if task.status is TaskStatus.COMPLETE else _fraction(task.progress),
        "message": task.progress_message or None,
        "worker": task.worker_id,
        "attempts": task.attempts,
        "started_at": ms(task.claimed_at) if task.attempts else None,
        "finished_at": ms(task.completed_at) if task.status.is_final else None,
        "cost_usd": cost,
    }
    return {k: v for k, v in row.items() if v is not None}


def _planned_row(pid: str, planned: dict[str, Any], wave_of: dict[str, int]) -> dict[str, Any]:
    """What the plan says of a task: title, type, executor, dependencies, wave, estimate."""
    row = {
        "id": pid,
        "title": planned.get("title") or pid,
        "type": planned.get("type"),
        "executor": planned.get("executor"),
        "deps": planned.get("deps") or [],
        "wave": wave_of.get(pid, 0),
        "estimate": finite(planned.get("estimate")),
    }
    return {k: v for k, v in row.items() if v is not None}
