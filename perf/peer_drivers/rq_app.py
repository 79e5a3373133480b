"""RQ: jobs are ``rq_app.bump`` by dotted path; workers are ``rq worker``."""

from __future__ import annotations

from collections.abc import Callable

from _body import bump as _bump
from _env import QUEUE, URL
from redis import Redis
from rq import Queue

PACKAGE = "rq"


def bump(sent: float | None = None) -> int:
    """The shared task body."""
    return _bump(sent)


def producer() -> tuple[Callable[[float | None], object], Callable[[], None]]:
    """``Queue.enqueue`` per task."""
    connection = Redis.from_url(URL)
    queue = Queue(QUEUE, connection=connection)

    def send(sent: float | None) -> object:
        return queue.enqueue(bump, sent)

    return send, connection.close
