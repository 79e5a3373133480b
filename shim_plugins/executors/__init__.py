"""SHIM's built-in executors: ``sim`` (simulated work), ``python`` (a callable), ``shell`` and
``agent`` (a coding-agent CLI in the task's git worktree)."""

from shim_plugins.executors.agent import AgentExecutor
from shim_plugins.executors.python import PythonExecutor
from shim_plugins.executors.shell import ShellExecutor
from shim_plugins.executors.sim import SimExecutor

__all__ = ["AgentExecutor", "PythonExecutor", "ShellExecutor", "SimExecutor"]
