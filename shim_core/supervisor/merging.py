"""Bringing a run's task branches together, with a conflict handed to an agent when the plan
says ``on_conflict: agent``.

The merge itself is :func:`shim_core.worktrees.merge_run`. When it stops at a conflict and the
run asks for it, a task ``resolve-<task>`` is added to the run: an agent works on a worktree of
the merged branch as it was at the conflict, with the conflicting branch merged in and its
conflict markers left in the files; once it completes, the merge is redone with the resolver's
branch just before the task that conflicted (which then merges as "already up to date").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shim_core.models import Task, TaskContext, TaskStatus
from shim_core.queue import TaskQueue
from shim_core.supervisor.runs import AGENT_EXECUTOR, RunRecord, load_run, task_id_in_run
from shim_core.worktrees import MergeConflict, MergeReport, merge_run

#: Waits until the given task is final; returns it (or None when it is gone).
WaitFor = Callable[[str], Task | None]


def merge_with_resolution(queue: TaskQueue, run: RunRecord, wait_for: WaitFor) -> MergeReport:
    """Merge the completed tasks of ``run``; with ``on_conflict: agent`` each conflict gets one
    resolver task, added to the run and waited for, before the merge goes on."""
    assert run.repo is not None
    done = {
        t.id.split(":", 1)[1]
        for t in queue.get_many(run.task_ids)
        if t is not None and t.status is TaskStatus.COMPLETE
    }
    order = [plan_id for plan_id in run.merge_order() if plan_id in done]
    report = merge_run(run.repo.repo, run.repo.base, run.run_id, order)
    tried: set[str] = set()
    while report.conflicts and run.on_conflict == "agent":
        conflict = report.conflicts[0]
        if conflict.task in tried:
            break
        tried.add(conflict.task)
        resolver = _resolve(queue, run, conflict, wait_for)
        if resolver is None:
            break
        at = order.index(conflict.task)
        order = [*order[:at], resolver, *order[at:]]
        report = merge_run(run.repo.repo, run.repo.base, run.run_id, order)
    return report


def _resolve(
    queue: TaskQueue, run: RunRecord, conflict: MergeConflict, wait_for: WaitFor
) -> str | None:
    """Add (or find) the resolver task of ``conflict`` and wait for it; its plan id when it
    completed, else None."""
    plan_id = f"resolve-{conflict.task}"
    task_id = task_id_in_run(run.run_id, plan_id)
    if queue.get(task_id) is None:
        queue.add(resolver_task(queue, run, conflict, plan_id))
        record = load_run(queue, run.run_id)
        ids = [*record.task_ids, task_id]
        queue.update_run(run.run_id, {"task_ids": json.dumps(ids)})
    finished = wait_for(task_id)
    return plan_id if finished is not None and finished.status is TaskStatus.COMPLETE else None


def resolver_task(queue: TaskQueue, run: RunRecord, conflict: MergeConflict, plan_id: str) -> Task:
    """The agent task that resolves ``conflict`` (same agent and model as the task whose branch
    conflicted)."""
    assert run.repo is not None
    original = queue.get(task_id_in_run(run.run_id, conflict.task))
    params = dict(original.params) if original is not None else {}
    keep: dict[str, Any] = {
        k: params[k] for k in ("agent", "model", "command", "env") if k in params
    }
    files = ", ".join(conflict.files) or "some files"
    return Task(
        id=task_id_in_run(run.run_id, plan_id),
        title=f"Resolve the merge conflict of task {conflict.task}",
        description=(
            f"The branch of task {conflict.task!r} has just been merged into the work of the "
            f"other tasks and conflicts in {files}. Those files hold git conflict markers "
            "(<<<<<<<, =======, >>>>>>>). Resolve every conflict so that the result keeps what "
            "both sides meant to do, remove all markers, and make sure the files are valid. Do "
            "not commit or change branches."
        ),
        executor=AGENT_EXECUTOR,
        params={**keep, "agent": keep.get("agent", "claude"), "resolve": conflict.task},
        run_id=run.run_id,
        max_attempts=1,
        context=TaskContext(
            files=conflict.files,
            session_id=run.run_id,
            repo=run.repo.repo,
            base=conflict.at or run.repo.base,
            workspace="worktree",
        ),
    )
