"""Events as the page receives them: a compact JSON object per event of the history."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shim_core.dashboard.encoding import finite
from shim_core.dashboard.runs import ms
from shim_core.history import EventLog, StreamedEvent
from shim_core.models import ProgressEvent, Task

#: Slack (ms) after a finished task's end within which its history is still read.
_END_SLACK_MS = 1000


def event_json(event: ProgressEvent) -> dict[str, Any]:
    """``type``, ``task``, ``worker``, ``status``, ``attempt``, ``ts`` (epoch ms) and, when the
    event has them, ``progress`` / ``message`` and the result's ``success`` / ``error`` /
    ``duration_ms`` / ``cost_usd`` (None values left out)."""
    out: dict[str, Any] = {
        "type": event.type.value,
        "task": event.task_id or None,
        "worker": event.worker_id or None,
        "status": event.status.value if event.status is not None else None,
        "attempt": event.attempt,
        "ts": ms(event.timestamp),
    }
    if event.progress is not None:
        out["progress"] = finite(event.progress.percentage)
        out["message"] = event.progress.message
    result = event.completion
    if result is not None:
        out |= {
            "success": result.success,
            "error": result.error,
            "duration_ms": result.duration_ms,
            "cost_usd": finite(result.cost_usd),
        }
    return {k: v for k, v in out.items() if v is not None}


def stream_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair (``"0-0"`` for anything malformed)."""
    head, _, seq = stream_id.partition("-")
    try:
        return int(head), int(seq or 0)
    except ValueError:
        return 0, 0


def task_history(log: EventLog, task: Task, until: str | None = None) -> list[dict[str, Any]]:
    """The events of ``task`` still in the history, oldest first, up to entry ``until`` (None:
    the newest). Stream ids start with the server's clock in ms, as the task's creation and end
    times do: only the entries of the task's lifetime are read, not the whole history."""
    created = ms(task.created_at)
    cursor = f"{max((created or 0) - 1, 0)}-0"
    last = stream_key(until) if until is not None else None
    end = ms(task.completed_at) if task.status.is_final else None
    if end is not None:
        bound = (end + _END_SLACK_MS, 0)
        last = bound if last is None else min(last, bound)
    found: list[dict[str, Any]] = []
    for batch in log.batches(cursor):
        for item in batch:
            if last is not None and stream_key(item.stream_id) > last:
                return found
            if item.event.task_id == task.id:
                found.append(event_json(item.event))
        if last is not None and stream_key(batch.cursor) >= last:
            break
    return found


def batch_json(batch: Iterable[StreamedEvent], run_id: str | None) -> list[dict[str, Any]]:
    """The events of ``batch`` a page scoped to ``run_id`` (None: the whole namespace) wants:
    its run's task events and every worker event."""
    prefix = f"{run_id}:" if run_id else ""
    return [
        event_json(e.event)
        for e in batch
        if not prefix or not e.event.task_id or e.event.task_id.startswith(prefix)
    ]
