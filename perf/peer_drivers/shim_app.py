"""SHIM producer (run with SHIM's own interpreter); workers are ``shim worker`` processes."""

from __future__ import annotations

from collections.abc import Callable

from _env import QUEUE, URL

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue

PACKAGE = "shim"
FUNCTION = "perf._peer_tasks:bump"
_queue: list[TaskQueue] = []


def _task(sent: float | None) -> Task:
    return Task(executor="python", params={"function": FUNCTION, "sent": sent})


def producer() -> tuple[Callable[[float | None], object], Callable[[], None]]:
    """``TaskQueue.add`` of one task per call."""
    connection = RedisConnectionManager(URL)
    connection.connect()
    queue = TaskQueue(connection, Settings.load(redis_url=URL, namespace=QUEUE))
    _queue.append(queue)

    def send(sent: float | None) -> object:
        return queue.add(_task(sent))

    return send, connection.disconnect


def send_batch(count: int) -> None:
    """One ``add_many`` of ``count`` tasks (building them is timed too)."""
    _queue[0].add_many([_task(None) for _ in range(count)])


def send_map(count: int) -> None:
    """One ``add_map`` of ``count`` tasks: the same tasks as ``send_batch``'s, from a template."""
    template = Task(executor="python", params={"function": FUNCTION})
    _queue[0].add_map(template, ({"sent": None} for _ in range(count)))
