"""Registers SHIM's built-in executors (entry point ``shim``: ``executors``)."""

from __future__ import annotations

from shim_core.contracts import Executor
from shim_core.hookspecs import hookimpl
from shim_plugins.executors.agent import AgentExecutor
from shim_plugins.executors.python import PythonExecutor
from shim_plugins.executors.shell import ShellExecutor
from shim_plugins.executors.sim import SimExecutor


@hookimpl
def shim_executors() -> list[Executor]:
    """The built-in executors: ``sim``, ``python``, ``shell`` and ``agent``."""
    return [SimExecutor(), PythonExecutor(), ShellExecutor(), AgentExecutor()]
