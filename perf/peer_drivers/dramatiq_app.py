"""Dramatiq: a ``RedisBroker`` and one actor; workers are ``dramatiq dramatiq_app``."""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
from _body import bump as _bump
from _env import QUEUE, URL
from dramatiq.brokers.redis import RedisBroker

PACKAGE = "dramatiq"
broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)  # type: ignore[untyped-decorator]
def bump(sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


def producer() -> tuple[Callable[[float | None], object], Callable[[], None]]:
    """``actor.send`` per task."""
    return bump.send, broker.close
