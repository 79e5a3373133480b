"""Registers SHIM's built-in decomposition strategies (entry point ``shim``: ``decomposers``)."""

from __future__ import annotations

from shim_core.contracts import Decomposer
from shim_core.hookspecs import hookimpl
from shim_plugins.decomposers.agent import AgentDecomposer
from shim_plugins.decomposers.lines import LinesDecomposer
from shim_plugins.decomposers.plan_file import PlanFileDecomposer


@hookimpl
def shim_decomposers() -> list[Decomposer]:
    """The built-in strategies: ``plan`` (a plan file), ``lines`` (a list in text) and
    ``agent`` (a coding-agent CLI writes the plan of a free-text request)."""
    return [PlanFileDecomposer(), LinesDecomposer(), AgentDecomposer()]
