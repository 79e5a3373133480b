"""One task as its dashboard page shows it: state, attempts, log tail, latest checkpoint, the
results of its dependencies, its own result or error, and for agent tasks the branch, session,
summary and files changed. Everything here is data read from Redis, so untrusted: the page puts
it on screen as text only."""

from __future__ import annotations

import contextlib
from typing import Any

from shim_core.checkpoints import CheckpointStore
from shim_core.dashboard.encoding import finite
from shim_core.dashboard.runs import ms
from shim_core.errors import ShimError, TaskNotFound
from shim_core.models import Task, TaskResult
from shim_core.queue import TaskQueue
from shim_core.supervisor.runs import AGENT_EXECUTOR, plan_id_of
from shim_core.worktrees import task_branch

#: Log lines the task page shows (the newest).
LOG_TAIL = 200


def task_detail(
    queue: TaskQueue, task_id: str, checkpoints: CheckpointStore | None
) -> dict[str, Any]:
    """Everything the task page shows (TaskNotFound when there is no such task)."""
    task = queue.get(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    states = {s.id: s for s in queue.states(task.dependencies)}
    results = queue.results(task.dependencies)
    dependencies = [
        {
            "id": dep,
            "status": states[dep].status.value if dep in states else "missing",
            "result": _result(results.get(dep)),
        }
        for dep in task.dependencies
    ]
    checkpoint = _checkpoint(checkpoints, task_id)
    return {
        "id": task.id,
        "run_id": task.run_id,
        "plan_id": plan_id_of(task.id) if task.run_id else None,
        "title": task.title,
        "description": task.description,
        "type": task.type,
        "executor": task.executor,
        "priority": task.priority.value,
        "status": task.status.value,
        "progress": finite(task.progress, 0.0),
        "message": task.progress_message,
        "worker": task.worker_id,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts or queue.settings.max_attempts,
        "stalls": task.stalls,
        "created_at": ms(task.created_at),
        "started_at": ms(task.claimed_at) if task.attempts else None,
        "finished_at": ms(task.completed_at) if task.status.is_final else None,
        "due_at": ms(task.due_at),
        "dependencies": dependencies,
        "result": _result(task.result),
        "log": queue.log_tail(task_id, LOG_TAIL),
        "checkpoint": checkpoint,
        "agent": _agent(task, checkpoint) if task.executor == AGENT_EXECUTOR else None,
    }


def _checkpoint(store: CheckpointStore | None, task_id: str) -> dict[str, Any] | None:
    """The task's latest checkpoint (None without one, or without a checkpoint store)."""
    found = store.latest(task_id) if store is not None else None
    if found is None:
        return None
    return {
        "id": found.id,
        "attempt": found.attempt,
        "progress": finite(found.progress, 0.0),
        "created_at": found.created_at_ms,
        "state": found.state,
    }


def _result(result: TaskResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "success": result.success,
        "output": result.output,
        "error": result.error,
        "outcome": result.outcome.value if result.outcome is not None else None,
        "files_modified": list(result.files_modified),
        "duration_ms": result.duration_ms,
        "cost_usd": finite(result.cost_usd),
    }


def _agent(task: Task, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """Branch, session id, summary and files of an agent task: from its result once it has one,
    else from its latest checkpoint (the session id is saved as soon as the CLI reports it)."""
    output = task.result.output if task.result is not None else None
    out = output if isinstance(output, dict) else {}
    state = checkpoint["state"] if checkpoint is not None else {}
    branch = out.get("branch")
    if branch is None and task.run_id and task.context.workspace == "worktree":
        with contextlib.suppress(ShimError):  # an id git cannot take has no branch
            branch = task_branch(task.run_id, plan_id_of(task.id))
    return {
        "agent": out.get("agent") or state.get("agent") or task.params.get("agent"),
        "branch": branch,
        "session_id": out.get("session_id") or state.get("session_id"),
        "summary": out.get("summary"),
        "files_changed": list(task.result.files_modified) if task.result is not None else [],
        "commit": out.get("commit"),
        "cost_usd": out.get("cost_usd"),
    }
