"""The supervisor: plans, their decomposition into waves of tasks, and running them.

::

    from shim_core.supervisor import Supervisor, TaskDecomposer, load_plan

Every name is imported from its module on first use, so a process that reads plans does not load
the queue, and one that imports a single submodule (a plugin importing
:mod:`shim_core.supervisor.plan`) loads only that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shim_core._lazy import lazy_exports

if TYPE_CHECKING:
    from shim_core.supervisor.decomposer import (
        DEFAULT_ESTIMATE,
        TaskDecomposer,
        ValidationResult,
    )
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

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("DEFAULT_ESTIMATE", "TaskDecomposer", "ValidationResult"),
        "shim_core.supervisor.decomposer",
    ),
    **dict.fromkeys(
        ("DecompositionPlan", "build_waves", "critical_path"), "shim_core.supervisor.graph"
    ),
    **dict.fromkeys(
        ("ON_FAILURE", "Plan", "PlanError", "PlanTask", "load_plan", "parse_plan", "validate_plan"),
        "shim_core.supervisor.plan",
    ),
    "Supervisor": "shim_core.supervisor.supervisor",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)
