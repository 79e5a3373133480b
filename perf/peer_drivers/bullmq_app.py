"""BullMQ's Python port: the producer's ``Queue.add``, and a worker when run as a script
(``python bullmq_app.py``: a ``Worker`` that runs until SIGTERM / SIGINT)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from _body import bump as _bump
from _env import CONCURRENCY, QUEUE, URL
from bullmq import Queue, Worker

PACKAGE = "bullmq"


async def bump(job: Any, token: Any) -> int:
    """The shared task body."""
    return _bump(job.data.get("sent"))


async def aproducer() -> tuple[Callable[[float | None], Awaitable[object]], Callable[[], Any]]:
    """``Queue.add`` per task."""
    queue = Queue(QUEUE, {"connection": URL})

    async def send(sent: float | None) -> object:
        return await queue.add("bump", {"sent": sent})

    return send, queue.close


async def work() -> None:
    """Run one ``Worker`` until a stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(QUEUE, bump, {"connection": URL, "concurrency": CONCURRENCY})
    await stop.wait()
    await worker.close()


if __name__ == "__main__":
    asyncio.run(work())
