"""taskiq with taskiq-redis's ``RedisStreamBroker`` (the one its README shows first, with acks);
workers are ``taskiq worker taskiq_app:broker``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from _body import bump as _bump
from _env import QUEUE, URL
from taskiq_redis import RedisStreamBroker

PACKAGE = "taskiq"
broker = RedisStreamBroker(url=URL, queue_name=QUEUE)


@broker.task
async def bump(sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


async def aproducer() -> tuple[Callable[[float | None], Awaitable[object]], Callable[[], Any]]:
    """``task.kiq`` per task."""
    await broker.startup()

    async def send(sent: float | None) -> object:
        return await bump.kiq(sent)

    return send, broker.shutdown
