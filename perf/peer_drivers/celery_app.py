"""Celery with the Redis broker (no result backend, the default); workers are ``celery worker``."""

from __future__ import annotations

from collections.abc import Callable

from _body import bump as _bump
from _env import QUEUE, URL
from celery import Celery

PACKAGE = "celery"
app = Celery("shimperf", broker=URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@app.task(name="shimperf.bump")  # type: ignore[untyped-decorator]
def bump(sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


def producer() -> tuple[Callable[[float | None], object], Callable[[], None]]:
    """``task.delay`` per task."""
    return bump.delay, lambda: None
