"""SAQ: a ``Queue`` and ``settings`` for ``saq saq_app.settings``; the producer's ``enqueue``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from _body import bump as _bump
from _env import CONCURRENCY, QUEUE, URL
from saq import Queue

PACKAGE = "saq"
queue = Queue.from_url(URL, name=QUEUE)


async def bump(ctx: dict[str, Any], *, sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


settings = {"queue": queue, "functions": [bump], "concurrency": CONCURRENCY}


async def aproducer() -> tuple[Callable[[float | None], Awaitable[object]], Callable[[], Any]]:
    """``Queue.enqueue`` per task."""
    await queue.connect()

    async def send(sent: float | None) -> object:
        return await queue.enqueue("bump", sent=sent)

    return send, queue.disconnect
