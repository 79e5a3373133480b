"""Runs: one submitted plan, its task ids under the run id, and its report.

A plan's task ids are local to the plan; in Redis each task is ``<run_id>:<plan id>``, so the same
plan can run many times side by side. The run record (hash ``run:<id>``) keeps the plan's name,
waves and task ids, so any process can rebuild the run's view from Redis alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from shim_core.errors import ShimError, TaskError
from shim_core.models import Task, TaskContext, TaskResult, TaskStatus, new_id
from shim_core.queue import TaskQueue
from shim_core.serde import converter, from_ms
from shim_core.supervisor.graph import DecompositionPlan
from shim_core.supervisor.plan import Plan, PlanTask
from shim_core.worktrees import MergeReport, RepoInfo, is_url, resolve_repo


class RunNotFound(ShimError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id


class CorruptRun(ShimError):
    """A run record that does not decode (changed by hand in Redis, say)."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} has a corrupt record: {why}")
        self.run_id = run_id


def task_id_in_run(run_id: str, plan_id: str) -> str:
    return f"{run_id}:{plan_id}"


def plan_id_of(task_id: str) -> str:
    return task_id.split(":", 1)[1] if ":" in task_id else task_id


#: The executor whose tasks get a workspace (a git worktree) and a share of the run's budget.
AGENT_EXECUTOR = "agent"


def tasks_of_plan(
    plan: Plan, run_id: str, estimates: dict[str, float], repo: RepoInfo | None = None
) -> list[Task]:
    """The queue tasks of ``plan`` for run ``run_id``; agent tasks work in ``repo``."""
    on_failure = "continue" if plan.on_failure == "continue" else None
    return [
        Task(
            id=task_id_in_run(run_id, t.id),
            type=t.type,
            title=t.title or t.id,
            description=t.description,
            priority=t.priority,
            executor=t.executor,
            params=_params(plan, t),
            dependencies=tuple(task_id_in_run(run_id, d) for d in t.deps),
            context=_context(plan, t, run_id, repo),
            max_attempts=t.max_attempts,
            timeout_ms=int(t.timeout * 1000) if t.timeout else None,
            estimated_duration=int(estimates.get(t.id, 0) * 1000) or None,
            run_id=run_id,
            on_failure=on_failure,
        )
        for t in plan.tasks
    ]


def _params(plan: Plan, task: PlanTask) -> dict[str, Any]:
    params = dict(task.params)
    if task.executor == AGENT_EXECUTOR and plan.prompt_template:
        params.setdefault("prompt_template", plan.prompt_template)
    return params


def _context(plan: Plan, task: PlanTask, run_id: str, repo: RepoInfo | None) -> TaskContext:
    context = TaskContext(files=task.files, session_id=run_id, acceptance=task.acceptance)
    if task.executor != AGENT_EXECUTOR:
        return attrs.evolve(context, project_path=task.workdir) if task.workdir else context
    if repo is None:  # no git repository: the agents work in the submitter's directory
        return attrs.evolve(context, workspace="shared", project_path=str(Path.cwd()))
    workspace = plan.workspace or "worktree"
    shared_path = repo.repo if workspace == "shared" and not is_url(repo.repo) else ""
    return attrs.evolve(
        context, repo=repo.repo, base=repo.base, workspace=workspace, project_path=shared_path
    )


def needs_repo(plan: Plan) -> bool:
    """Whether a run of ``plan`` works on a git repository (it names one, or has agent tasks)."""
    return plan.repo is not None or any(t.executor == AGENT_EXECUTOR for t in plan.tasks)


@attrs.frozen(kw_only=True)
class RunRecord:
    run_id: str
    name: str
    created_at: datetime
    task_ids: tuple[str, ...]  # queue ids, plan order
    waves: tuple[tuple[str, ...], ...]  # plan ids
    estimates: dict[str, float]  # plan id -> seconds
    plan: dict[str, Any]  # DecompositionPlan.to_dict()
    #: The git repository and base commit the run's agent tasks work on (None: no workspace).
    repo: RepoInfo | None = None
    #: ``worktree``: task branches are merged when the run ends.
    workspace: str = ""
    budget_usd: float | None = None
    #: What the run's agents reported spending so far (kept by the scripts).
    cost_usd: float = 0.0
    #: ``stop`` or ``agent`` (see :class:`~shim_core.supervisor.plan.Plan`).
    on_conflict: str = "stop"

    def merge_order(self) -> list[str]:
        """Plan ids in a topological order, ties by plan order (the order branches merge in)."""
        tasks = self.plan.get("tasks", [])
        deps = {t["id"]: set(t.get("deps", ())) for t in tasks}
        done: list[str] = []
        left = [t["id"] for t in tasks]
        while left:
            ready = next((t for t in left if deps[t] <= set(done)), left[0])
            done.append(ready)
            left.remove(ready)
        return done

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Queue task id -> queue ids of its dependencies, from the stored plan (no task read)."""
        return {
            task_id_in_run(self.run_id, t["id"]): tuple(
                task_id_in_run(self.run_id, d) for d in t.get("deps", ())
            )
            for t in self.plan.get("tasks", [])
        }


def submit_run(
    queue: TaskQueue, decomposition: DecompositionPlan, *, budget_usd: float | None = None
) -> RunRecord:
    """Write the run record and enqueue its tasks; nothing is enqueued if the tasks are refused
    (the record, written first so that claims see the run's budget, is then removed).

    A plan with agent tasks works on its ``repo`` (default: the git repository holding the
    current directory), whose HEAD becomes the run's base commit."""
    run_id = new_id()[:10]
    plan = decomposition.plan
    repo = resolve_repo(plan.repo) if needs_repo(plan) else None
    tasks = tasks_of_plan(plan, run_id, dict(decomposition.estimates), repo)
    budget = budget_usd if budget_usd is not None else plan.budget_usd
    summary = decomposition.to_dict()
    record = {
        "name": plan.name,
        "task_ids": json.dumps([t.id for t in tasks]),
        "waves": json.dumps([list(w) for w in decomposition.waves]),
        "estimates": json.dumps(dict(decomposition.estimates)),
        "plan": json.dumps(summary),
    }
    if repo is not None:
        record |= {"repo": repo.repo, "base": repo.base, "workspace": plan.workspace or "worktree"}
        record["on_conflict"] = plan.on_conflict or "stop"
    if budget is not None:
        record["budget_usd"] = repr(float(budget))
    _, created_ms = queue.add_run(run_id, record, tasks)
    record["created_at"] = str(created_ms)
    # What load_run would read back; the plan summary is JSON data already, not decoded again.
    return _run_record(run_id, record, summary)


def load_run(queue: TaskQueue, run_id: str) -> RunRecord:
    fields = queue.run_fields(run_id)
    if not fields:
        raise RunNotFound(run_id)
    try:
        return _run_record(run_id, fields, json.loads(fields.get("plan", "{}")))
    except KeyError as exc:
        raise CorruptRun(run_id, f"no {exc.args[0]} field") from None
    except (TypeError, ValueError) as exc:  # json's errors are ValueErrors
        raise CorruptRun(run_id, str(exc)[:200]) from None


def _run_record(run_id: str, fields: dict[str, str], plan: dict[str, Any]) -> RunRecord:
    """The record of a run from the fields of its hash (``plan``: the ``plan`` field decoded)."""
    return RunRecord(
        run_id=run_id,
        name=fields.get("name", ""),
        created_at=from_ms(fields["created_at"]),
        task_ids=tuple(json.loads(fields["task_ids"])),
        waves=tuple(tuple(w) for w in json.loads(fields["waves"])),
        estimates=json.loads(fields.get("estimates", "{}")),
        plan=plan,
        repo=RepoInfo(fields["repo"], fields.get("base", "")) if fields.get("repo") else None,
        workspace=fields.get("workspace", ""),
        budget_usd=_amount(fields, "budget_usd"),
        cost_usd=_amount(fields, "cost_usd") or 0.0,
        on_conflict=fields.get("on_conflict", "stop"),
    )


def _amount(fields: dict[str, str], name: str) -> float | None:
    """The amount in USD of field ``name`` (None when absent); ValueError naming the field."""
    raw = fields.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} is not a number: {raw[:40]!r}") from None


def latest_run_id(queue: TaskQueue) -> str | None:
    return queue.latest_run_id()


@attrs.frozen(kw_only=True)
class TaskReport:
    """One task's line of a run report (``id`` is the plan's id)."""

    id: str
    status: str
    attempts: int
    worker: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    result: TaskResult | None


@attrs.frozen(kw_only=True)
class RunReport:
    run_id: str
    name: str
    ok: bool
    summary: dict[str, int]
    duration_ms: int
    waves: tuple[tuple[str, ...], ...]
    tasks: tuple[TaskReport, ...]  # completion order
    #: What the run's agents spent (USD), as they reported it.
    cost_usd: float = 0.0
    budget_usd: float | None = None
    #: How the task branches came together (None: the run had no worktrees).
    merge: MergeReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` report: timestamps ISO 8601 UTC, results with success / output /
        files_modified / error."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "ok": self.ok,
            "summary": self.summary,
            "duration_ms": self.duration_ms,
            "waves": [list(w) for w in self.waves],
            "tasks": [_task_dict(t) for t in self.tasks],
            "cost_usd": round(self.cost_usd, 6),
            "merge": self.merge.to_dict() if self.merge is not None else None,
        }


def _task_dict(t: TaskReport) -> dict[str, Any]:
    result = None
    if t.result is not None:
        result = {
            "success": t.result.success,
            "output": t.result.output,
            "files_modified": list(t.result.files_modified),
            "error": t.result.error,
        }
    return {
        "id": t.id,
        "status": t.status,
        "attempts": t.attempts,
        "worker": t.worker,
        "started_at": _iso(t.started_at),
        "completed_at": _iso(t.completed_at),
        "duration_ms": t.duration_ms,
        "result": result,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def build_report(record: RunRecord, tasks: Sequence[Task], order: Sequence[str] = ()) -> RunReport:
    """The report of a run from its tasks' final state, in completion order: by completion time
    (Redis server clock, ms), ties broken by ``order``, the order in which events arrived."""
    position = {task_id: i for i, task_id in enumerate(order)}
    finished = sorted(
        (t for t in tasks if t.status.is_final),
        key=lambda t: (
            t.completed_at.timestamp() if t.completed_at else 0.0,
            position.get(t.id, len(position)),
            t.id,
        ),
    )
    summary: dict[str, int] = {}
    for task in tasks:
        summary[task.status.value] = summary.get(task.status.value, 0) + 1
    ends = [t.completed_at for t in tasks if t.completed_at]
    duration = int((max(ends) - record.created_at).total_seconds() * 1000) if ends else 0
    return RunReport(
        run_id=record.run_id,
        name=record.name,
        cost_usd=record.cost_usd,
        budget_usd=record.budget_usd,
        ok=all(t.status is TaskStatus.COMPLETE for t in tasks),
        summary=summary,
        duration_ms=max(duration, 0),
        waves=record.waves,
        tasks=tuple(_task_report(t) for t in finished),
    )


def _task_report(task: Task) -> TaskReport:
    started = task.claimed_at if task.attempts else None
    duration = None
    if started and task.completed_at:
        duration = int((task.completed_at - started).total_seconds() * 1000)
    return TaskReport(
        id=plan_id_of(task.id),
        status=task.status.value,
        attempts=task.attempts,
        worker=task.worker_id,
        started_at=started,
        completed_at=task.completed_at,
        duration_ms=duration,
        result=task.result,
    )


def report_to_json(report: RunReport) -> str:
    return json.dumps(report.to_dict(), default=converter.unstructure)


def cancel_run(queue: TaskQueue, run_id: str, reason: str = "run cancelled") -> int:
    """Cancel every unfinished task of a run; returns how many tasks this cancelled."""
    run = load_run(queue, run_id)
    before = {t.id for t in queue.get_many(run.task_ids) if t is not None and not t.status.is_final}
    for task_id in run.task_ids:
        if task_id in before:
            with contextlib.suppress(TaskError):  # cancelled meanwhile by a cascade, or finished
                queue.cancel(task_id, reason)
    after = queue.get_many(sorted(before))
    return sum(1 for t in after if t is not None and t.status is TaskStatus.CANCELLED)


def retry_run(queue: TaskQueue, run_id: str) -> list[str]:
    """Run every failed or cancelled task of a run again, dependencies first (wave by wave);
    returns their queue ids."""
    run = load_run(queue, run_id)
    ordered = [task_id_in_run(run_id, plan_id) for wave in run.waves for plan_id in wave]
    again = [
        t.id
        for t in queue.get_many(ordered)
        if t is not None and t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    ]
    for task_id in again:
        queue.retry(task_id)
    return again
