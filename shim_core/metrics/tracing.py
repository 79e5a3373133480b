"""OpenTelemetry spans, one per task attempt (``shim worker --otel``; the ``otel`` extra).

Each execution a worker runs to an outcome becomes a span ``shim.task <type>`` (kind CONSUMER)
covering the run, with the task's id, type, attempt, run and executor, the worker's id and the
outcome; an attempt that failed (``failed``, ``retrying``) has status ERROR with its error. Spans
go to the global tracer provider, configured as for any Python program: run the worker under
``opentelemetry-instrument`` with an exporter installed, or set one up in a plugin.

The span is made when the outcome is known, with the run's start time: executors' own spans are
not its children.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from shim_core.models import Claim, Task, TaskResult

#: Outcomes of an attempt that failed.
FAILED = frozenset({"failed", "retrying"})


class TaskSpans:
    """A worker observer that records a span per finished execution."""

    def __init__(self, worker_id: str, tracer_provider: Any = None) -> None:
        self.worker_id = worker_id
        self._tracer = trace.get_tracer("shim", tracer_provider=tracer_provider)

    def claimed(self, claims: Iterable[Claim]) -> None:
        """Nothing to record: the span covers the run."""

    def finished(
        self, task: Task, outcome: str, duration_ms: int, result: TaskResult | None = None
    ) -> None:
        """Record the span of one execution that ended just now and took ``duration_ms``."""
        end = time.time_ns()
        attributes: dict[str, str | int] = {
            "shim.task.id": task.id,
            "shim.task.type": task.type,
            "shim.task.attempt": task.attempts,
            "shim.worker.id": self.worker_id,
            "shim.outcome": outcome,
        }
        for key, value in (("shim.run.id", task.run_id), ("shim.executor", task.executor)):
            if value:
                attributes[key] = value
        span = self._tracer.start_span(
            f"shim.task {task.type}",
            kind=SpanKind.CONSUMER,
            start_time=end - duration_ms * 1_000_000,
            attributes=attributes,
        )
        if outcome in FAILED:
            error = result.error if result is not None else None
            span.set_status(Status(StatusCode.ERROR, error or outcome))
        span.end(end_time=end)
