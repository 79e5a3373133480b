"""The plugin module of shim-hello (entry point ``hello`` in the ``shim`` group).

A SHIM plugin is any module with functions marked ``@hookimpl``; this one implements the
``shim_executors`` hook. An executor satisfies :class:`shim_core.contracts.Executor` by shape: a
``name``, the ``task_types`` it runs when a task names no executor, and ``execute(task, ctx)``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from shim_core.contracts import ExecutionContext
from shim_core.hookspecs import hookimpl
from shim_core.models import Task, TaskResult


@attrs.frozen
class HelloExecutor:
    """Greets ``params["name"]`` (default ``"world"``), reporting progress on the way.

    Tasks select it with ``executor: hello``, or by their type ``greet`` when they name no
    executor.
    """

    name: str = "hello"
    task_types: tuple[str, ...] = ("greet",)
    #: Nothing in a task makes it run code: workers run it without ``--allow hello``.
    runs_code: ClassVar[bool] = False

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult:
        who = str(task.params.get("name", "world"))
        ctx.progress(0.5, f"greeting {who}")
        if ctx.cancelled.is_set():  # cancelled, timed out, or the worker is shutting down
            return TaskResult(success=False, error="cancelled")
        greeting = f"hello, {who}"
        ctx.log.info("said %r", greeting)  # also kept in the task's log in Redis
        ctx.progress(1.0, "greeted")
        return TaskResult(success=True, output=greeting)


@hookimpl
def shim_executors() -> list[HelloExecutor]:
    """The executors this plugin provides."""
    return [HelloExecutor()]
