"""SHIM's built-in decomposition strategies: ``plan`` (a plan file) and ``lines`` (a text list)."""

from shim_plugins.decomposers.lines import LinesDecomposer
from shim_plugins.decomposers.plan_file import PlanFileDecomposer

__all__ = ["LinesDecomposer", "PlanFileDecomposer"]
