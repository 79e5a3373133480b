"""Runs as the dashboard shows them: a summary per run (counts, progress, ETA, cost) and one run's
tasks by DAG waves, as JSON-able dicts.

The static part of a run (titles, types, dependencies, waves, estimates) comes from its record;
only the moving part is read from the tasks, so a 5,000-task run costs one pipelined read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shim_core.models import Task, TaskStatus
from shim_core.queue import TaskQueue, TaskState
from shim_core.supervisor.progress import FALLBACK_ESTIMATE, schedule_makespan
from shim_core.supervisor.runs import RunNotFound, RunRecord, load_run, plan_id_of

#: Runs the overview lists (newest first).
RUNS_LISTED = 20


def ms(value: datetime | None) -> int | None:
    """Epoch milliseconds of ``value`` (None stays None): what the page's clock reads."""
    return None if value is None else int(value.timestamp() * 1000)


def summarize(
    record: RunRecord, states: Sequence[TaskState | Task], live_workers: int
) -> dict[str, Any]:
    """Totals of one run: counts by status, fraction done (running tasks by their progress),
    the estimated seconds left over ``live_workers`` (None: no live worker), cost and budget."""
    counts: dict[str, int] = {}
    done = 0.0
    left: dict[str, float] = {}
    seen = set()
    for s in states:
        seen.add(s.id)
        counts[s.status.value] = counts.get(s.status.value, 0) + 1
        final = s.status.is_final
        progress = 1.0 if s.status is TaskStatus.COMPLETE else s.progress
        done += 1.0 if final else progress
        if not final:
            left[s.id] = _estimate(record, s.id) * (1 - progress)
    for task_id in record.task_ids:
        if task_id not in seen:  # removed (cleaned) tasks count as waiting, as in shim status
            left[task_id] = _estimate(record, task_id)
    total = len(record.task_ids)
    finished = not left
    eta = 0.0 if finished else None
    if left and live_workers > 0:
        eta = schedule_makespan(left, record.dependencies(), live_workers)
    return {
        "run_id": record.run_id,
        "name": record.name,
        "created_at": ms(record.created_at),
        "total": total,
        "counts": counts,
        "percent": done / total if total else 1.0,
        "eta_s": eta,
        "finished": finished,
        "ok": finished and counts.get("complete", 0) == total,
        "cost_usd": round(record.cost_usd, 6),
        "budget_usd": record.budget_usd,
    }


def _estimate(record: RunRecord, task_id: str) -> float:
    return float(record.estimates.get(plan_id_of(task_id), FALLBACK_ESTIMATE))


def run_summaries(queue: TaskQueue, live_workers: int, limit: int = RUNS_LISTED) -> list[Any]:
    """Summaries of the runs submitted last, newest first (records gone meanwhile left out)."""
    found = []
    for run_id in queue.run_ids(limit):
        try:
            record = load_run(queue, run_id)
        except RunNotFound:
            continue
        found.append(summarize(record, queue.states(record.task_ids), live_workers))
    return found


def run_summary(queue: TaskQueue, run_id: str, live_workers: int) -> dict[str, Any]:
    """The summary of one run (RunNotFound when there is no such run)."""
    record = load_run(queue, run_id)
    return summarize(record, queue.states(record.task_ids), live_workers)


def run_detail(queue: TaskQueue, run_id: str, live_workers: int) -> dict[str, Any]:
    """One run: its summary, its waves of plan ids and a row per task (plan order).

    Reads only the moving fields of each task (two pipelined reads for 5,000 tasks), plus the
    recorded results of agent tasks (for their cost)."""
    record = load_run(queue, run_id)
    states = queue.states(record.task_ids)
    planned = {str(t.get("id")): t for t in record.plan.get("tasks", ()) if isinstance(t, dict)}
    agents = [s.id for s in states if planned.get(plan_id_of(s.id), {}).get("executor") == "agent"]
    costs = {k: r.cost_usd for k, r in queue.results(agents).items()} if agents else {}
    wave_of = {pid: i for i, wave in enumerate(record.waves) for pid in wave}
    rows = [_row(s, planned.get(plan_id_of(s.id), {}), wave_of, costs.get(s.id)) for s in states]
    return {
        "summary": summarize(record, states, live_workers),
        "waves": [list(w) for w in record.waves],
        "tasks": rows,
    }


def _row(
    task: TaskState, planned: dict[str, Any], wave_of: dict[str, int], cost: float | None
) -> dict[str, Any]:
    """What a DAG node shows of a task (None values left out: 5,000 rows stay small)."""
    pid = plan_id_of(task.id)
    row = {
        "id": pid,
        "title": planned.get("title") or pid,
        "type": planned.get("type"),
        "executor": planned.get("executor"),
        "deps": planned.get("deps") or [],
        "wave": wave_of.get(pid, 0),
        "status": task.status.value,
        "progress": 1.0 if task.status is TaskStatus.COMPLETE else task.progress,
        "message": task.progress_message or None,
        "worker": task.worker_id,
        "attempts": task.attempts,
        "started_at": ms(task.claimed_at) if task.attempts else None,
        "finished_at": ms(task.completed_at) if task.status.is_final else None,
        "cost_usd": cost,
        "estimate": planned.get("estimate"),
    }
    return {k: v for k, v in row.items() if v is not None}
