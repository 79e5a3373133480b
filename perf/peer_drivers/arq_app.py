"""arq: ``WorkerSettings`` for ``arq arq_app.WorkerSettings``; the producer's ``enqueue_job``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from _body import bump as _bump
from _env import CONCURRENCY, QUEUE, URL
from arq import create_pool
from arq.connections import RedisSettings

PACKAGE = "arq"


async def bump(ctx: dict[str, Any], sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


class WorkerSettings:
    """Read by the ``arq`` CLI; everything else is arq's default (poll_delay 0.5 s)."""

    functions: ClassVar[list[Any]] = [bump]
    redis_settings = RedisSettings.from_dsn(URL)
    queue_name = QUEUE
    max_jobs = CONCURRENCY


async def aproducer() -> tuple[Callable[[float | None], Awaitable[object]], Callable[[], Any]]:
    """``ArqRedis.enqueue_job`` per task."""
    pool = await create_pool(RedisSettings.from_dsn(URL), default_queue_name=QUEUE)

    async def send(sent: float | None) -> object:
        return await pool.enqueue_job("bump", sent)

    return send, pool.aclose
