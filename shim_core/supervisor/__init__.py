"""The supervisor: plans, their decomposition into waves of tasks, and running them.

::

    from shim_core.supervisor import Supervisor, TaskDecomposer, load_plan

``Supervisor`` is imported on first use, so reading and analysing plans does not load the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shim_core.supervisor.decomposer import DEFAULT_ESTIMATE, TaskDecomposer, ValidationResult
from shim_core.supervisor.graph import DecompositionPlan, build_waves, critical_path
from shim_core.supervisor.plan import (
    ON_FAILURE,
    Plan,
    PlanError,
    PlanTask,
    load_plan,
    parse_plan,
    validate_plan,
)

if TYPE_CHECKING:
    from shim_core.supervisor.supervisor import Supervisor

__all__ = [
    "DEFAULT_ESTIMATE",
    "ON_FAILURE",
    "DecompositionPlan",
    "Plan",
    "PlanError",
    "PlanTask",
    "Supervisor",
    "TaskDecomposer",
    "ValidationResult",
    "build_waves",
    "critical_path",
    "load_plan",
    "parse_plan",
    "validate_plan",
]


def __getattr__(name: str) -> Any:
    """Import ``Supervisor`` lazily (it brings in the queue, registry and worker recovery)."""
    if name == "Supervisor":
        from shim_core.supervisor.supervisor import Supervisor

        return Supervisor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
