"""huey: ``RedisHuey`` and its task; workers are ``huey_consumer huey_app.huey``."""

from __future__ import annotations

from collections.abc import Callable

from _body import bump as _bump
from _env import QUEUE, URL
from huey import RedisHuey

PACKAGE = "huey"
huey = RedisHuey(QUEUE, url=URL)


@huey.task()  # type: ignore[untyped-decorator]
def bump(sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


def producer() -> tuple[Callable[[float | None], object], Callable[[], None]]:
    """Calling the task enqueues it (one call per task)."""
    return bump, lambda: None
