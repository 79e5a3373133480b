"""SHIM's built-in decomposition strategies: ``plan`` (a plan file), ``lines`` (a text list) and
``agent`` (a plan asked of a coding-agent CLI)."""

from shim_plugins.decomposers.agent import AgentDecomposer
from shim_plugins.decomposers.lines import LinesDecomposer
from shim_plugins.decomposers.plan_file import PlanFileDecomposer

__all__ = ["AgentDecomposer", "LinesDecomposer", "PlanFileDecomposer"]
