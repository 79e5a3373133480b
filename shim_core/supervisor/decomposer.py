"""The task decomposer (seed component 5): a request in, a checked and analysed plan out.

The work of turning a request into tasks is done by a *strategy* (a
:class:`~shim_core.contracts.Decomposer` provided through the ``shim_decomposers`` hook); this
class picks the strategy, checks the plan against the executors and task types available, and
estimates how long it will take.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import attrs

from shim_core.models import TaskType
from shim_core.plugins import Plugins
from shim_core.supervisor.graph import DecompositionPlan
from shim_core.supervisor.plan import PLAN_SUFFIXES, Plan, PlanError, PlanTask, validate_plan

#: Seconds assumed for a task when neither the plan, the ``sim`` params nor measured history say
#: anything: long enough that an unknown task is not treated as free when planning, short
#: enough not to dominate the estimates of tasks that are known.
DEFAULT_ESTIMATE = 30.0

#: analyze_complexity: score = list items + conjunctions + words // WORDS_PER_POINT;
#: up to SIMPLE_MAX is 'simple', up to MODERATE_MAX 'moderate', above that 'complex'.
WORDS_PER_POINT = 40
SIMPLE_MAX = 1
MODERATE_MAX = 5
_LIST_ITEM = re.compile(r"^\s*(?:(?:step\s+)?\d+\s*[.):]|[-*\u2022])\s+\S", re.I | re.M)
_CONJUNCTION = re.compile(r"\b(?:and|then|also|plus|after|before|while)\b|;", re.I)


@attrs.frozen
class ValidationResult:
    """Whether a plan is usable here, and every problem when it is not."""

    ok: bool
    problems: list[str]


class TaskDecomposer:
    """Decomposes requests with the strategies of ``plugins``.

    ``history`` maps task types to their measured average duration in seconds; it refines the
    estimates of tasks that carry none themselves.
    """

    def __init__(self, plugins: Plugins, *, history: Mapping[str, float] | None = None) -> None:
        self.plugins = plugins
        self.history: dict[str, float] = dict(history or {})

    def decompose(
        self,
        request: str,
        strategy: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> DecompositionPlan:
        """Turn ``request`` into a checked plan with waves and estimates; raises PlanError.

        ``strategy`` None selects one (:meth:`select_strategy`). The plan is checked against the
        executors and task types available unless ``context["validate_executors"]`` is False
        (its structure is checked always). ``context["agent_adapters"]`` is filled with the
        installed agent adapters, for strategies that ask an agent.
        """
        context = dict(context or {})
        name = strategy or self.select_strategy(request)
        decomposer = self.plugins.decomposers.get(name)
        if decomposer is None:
            available = ", ".join(sorted(self.plugins.decomposers)) or "none"
            raise PlanError([f"unknown strategy {name!r} (available: {available})"])
        check = context.get("validate_executors", True) is not False
        if check:
            context.setdefault("executors", tuple(self.plugins.executors))
            context.setdefault("types", tuple(self.known_types()))
        context.setdefault("agent_adapters", self.plugins.adapters)
        plan = decomposer.decompose(request, context)
        if not isinstance(plan, Plan):
            raise PlanError([f"strategy {name!r} returned {type(plan).__name__}, not a Plan"])
        return self.decompose_plan(plan, request=request, validate_executors=check)

    def decompose_plan(
        self, plan: Plan, *, request: str = "", validate_executors: bool = True
    ) -> DecompositionPlan:
        """Check an already built ``plan`` and add waves and estimates; raises PlanError.

        ``validate_executors`` False checks the structure only, not executors and types.
        """
        if validate_executors:
            validate_plan(plan, executors=self.plugins.executors, types=self.known_types())
        else:
            validate_plan(plan)
        estimates = {task.id: self.estimate_duration(task) for task in plan.tasks}
        return DecompositionPlan.build(plan, estimates, original_request=request)

    def select_strategy(self, request: str) -> str:
        """``'plan'`` when the request names a plan file, else ``'lines'`` (a written request).

        A request names a file when it has a plan suffix (.yaml/.yml/.json) and no whitespace,
        or is an existing file with that suffix; and also when it looks like a path (no
        whitespace, a '/' in it) or names anything that exists: load_plan then says what is
        wrong with it (missing, a directory, not a plan file) instead of a mistyped path
        becoming a one-task plan.
        """
        text = request.strip()
        pathlike = not re.search(r"\s", text)
        if text.lower().endswith(PLAN_SUFFIXES):
            return "plan" if pathlike or Path(text).is_file() else "lines"
        if pathlike and ("/" in text or os.sep in text or Path(text).exists()):
            return "plan"
        return "lines"

    def known_types(self) -> tuple[str, ...]:
        """The built-in task types and those any loaded executor declares."""
        declared = [t for ex in self.plugins.executors.values() for t in ex.task_types]
        return tuple(dict.fromkeys([*TaskType.BUILTIN, *declared]))

    def analyze_complexity(self, description: str) -> str:
        """``'simple'``, ``'moderate'`` or ``'complex'``.

        Score = list items (numbered or bulleted lines) + conjunctions (and, then, also, plus,
        after, before, while, ';') + one point per 40 words. A score of 0-1 is simple, 2-5
        moderate, 6 or more complex.
        """
        items = len(_LIST_ITEM.findall(description))
        conjunctions = len(_CONJUNCTION.findall(description))
        score = items + conjunctions + len(description.split()) // WORDS_PER_POINT
        if score <= SIMPLE_MAX:
            return "simple"
        return "moderate" if score <= MODERATE_MAX else "complex"

    def identify_dependencies(self, tasks: Sequence[PlanTask]) -> dict[str, tuple[str, ...]]:
        """Each task's declared dependencies among ``tasks`` (others dropped, order kept)."""
        ids = {task.id for task in tasks}
        return {task.id: tuple(dep for dep in task.deps if dep in ids) for task in tasks}

    def estimate_duration(self, task: PlanTask) -> float:
        """Seconds: the task's ``estimate``, else ``params["duration"]`` of a ``sim`` task, else
        the measured average of its type, else :data:`DEFAULT_ESTIMATE`."""
        if task.estimate is not None:
            return task.estimate
        duration = task.params.get("duration")
        if task.executor == "sim" and _is_seconds(duration):
            return float(duration)
        if task.type in self.history:
            return float(self.history[task.type])
        return DEFAULT_ESTIMATE

    def validate_plan(self, plan: Plan) -> ValidationResult:
        """Check ``plan`` against the executors and types available here, without raising."""
        try:
            validate_plan(plan, executors=self.plugins.executors, types=self.known_types())
        except PlanError as exc:
            return ValidationResult(False, exc.problems)
        return ValidationResult(True, [])


def _is_seconds(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
