"""SHIM's built-in executors: ``sim`` (simulated work), ``python`` (a callable) and ``shell``."""

from shim_plugins.executors.python import PythonExecutor
from shim_plugins.executors.shell import ShellExecutor
from shim_plugins.executors.sim import SimExecutor

__all__ = ["PythonExecutor", "ShellExecutor", "SimExecutor"]
