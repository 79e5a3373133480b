"""Events as the page receives them: a compact JSON object per event of the history."""

from __future__ import annotations

from typing import Any

from shim_core.dashboard.runs import ms
from shim_core.history import EventLog, StreamedEvent
from shim_core.models import ProgressEvent


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
        out["progress"] = event.progress.percentage
        out["message"] = event.progress.message
    result = event.completion
    if result is not None:
        out |= {
            "success": result.success,
            "error": result.error,
            "duration_ms": result.duration_ms,
            "cost_usd": result.cost_usd,
        }
    return {k: v for k, v in out.items() if v is not None}


def task_history(log: EventLog, task_id: str) -> list[dict[str, Any]]:
    """The events of one task still in the history, oldest first (a task of a run: its run's
    events are read; a task outside any run has none kept apart, so none are shown)."""
    if ":" not in task_id:
        return []
    run_id = task_id.split(":", 1)[0]
    return [event_json(e.event) for e in log.of_run(run_id) if e.event.task_id == task_id]


def batch_json(batch: list[StreamedEvent], run_id: str | None) -> list[dict[str, Any]]:
    """The events of ``batch`` a page scoped to ``run_id`` (None: the whole namespace) wants:
    its run's task events and every worker event."""
    prefix = f"{run_id}:" if run_id else ""
    return [
        event_json(e.event)
        for e in batch
        if not prefix or not e.event.task_id or e.event.task_id.startswith(prefix)
    ]
