"""The shape of a plan: waves of parallel work, the critical path, and estimated durations.

All functions expect a valid plan (:func:`shim_core.supervisor.plan.validate_plan`): unique ids
and no cycles. Dependencies that name no task of the plan are ignored.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import attrs

from shim_core import dag
from shim_core.errors import DuplicateTask
from shim_core.supervisor.plan import Plan, PlanTask


@attrs.frozen(kw_only=True)
class DecompositionPlan:
    """A checked plan with its waves, estimates (seconds) and what they imply.

    ``estimated_total_duration`` is the critical path: the duration with unlimited workers.
    ``parallelization_factor`` is ``serial_duration / estimated_total_duration`` (1.0 for 0/0).
    """

    original_request: str
    plan: Plan
    waves: tuple[tuple[str, ...], ...]
    estimates: dict[str, float]
    serial_duration: float
    estimated_total_duration: float
    parallelization_factor: float
    critical_path: tuple[str, ...]

    @classmethod
    def build(
        cls, plan: Plan, estimates: Mapping[str, float], original_request: str = ""
    ) -> DecompositionPlan:
        """Compute waves, critical path and durations of ``plan`` from per-task estimates."""
        estimates = {task.id: float(estimates[task.id]) for task in plan.tasks}
        order = dependency_order(plan)
        path, length = _critical_path(plan, estimates, order)
        serial = sum(estimates.values())
        return cls(
            original_request=original_request,
            plan=plan,
            waves=_waves(plan, order),
            estimates=estimates,
            serial_duration=serial,
            estimated_total_duration=length,
            parallelization_factor=serial / length if length else 1.0,
            critical_path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (for ``shim plan`` output and reports)."""
        return {
            "name": self.plan.name,
            "request": self.original_request,
            "on_failure": self.plan.on_failure,
            "tasks": [self._task_dict(task) for task in self.plan.tasks],
            "waves": [list(wave) for wave in self.waves],
            "estimates": dict(self.estimates),
            "serial_duration": self.serial_duration,
            "estimated_total_duration": self.estimated_total_duration,
            "parallelization_factor": self.parallelization_factor,
            "critical_path": list(self.critical_path),
        }

    def _task_dict(self, task: PlanTask) -> dict[str, Any]:
        return {
            "id": task.id,
            "title": task.title,
            "type": task.type,
            "executor": task.executor,
            "priority": task.priority.value,
            "deps": list(task.deps),
            "estimate": self.estimates[task.id],
        }

    def makespan(self, workers: int) -> float:
        """Estimated duration with ``workers`` workers (>= 1).

        Greedy list scheduling: whenever a worker is free it starts the ready task with the
        longest path to the end of the plan (ties: plan order). With at least as many workers
        as tasks this equals the critical path; with one worker, the serial duration.
        """
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        order = {task.id: i for i, task in enumerate(self.plan.tasks)}
        dependents, waiting = _dependents(self.plan)
        tails = _tails(self.plan, self.estimates, dependents)
        ready = [(-tails[tid], order[tid], tid) for tid, left in waiting.items() if not left]
        heapq.heapify(ready)
        running: list[tuple[float, int, str]] = []
        now = 0.0
        while ready or running:
            while ready and len(running) < workers:
                _, index, tid = heapq.heappop(ready)
                heapq.heappush(running, (now + self.estimates[tid], index, tid))
            now, _, done = heapq.heappop(running)
            for child in dependents[done]:
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(ready, (-tails[child], order[child], child))
        return now


def dependency_order(plan: Plan) -> list[PlanTask]:
    """The tasks of ``plan`` with every dependency before its dependents (via shim_core.dag;
    a plan already in that order is returned in plan order after one pass)."""
    by_id: dict[str, PlanTask] = {}
    for task in plan.tasks:
        if task.id in by_id:
            raise DuplicateTask(task.id)
        by_id[task.id] = task
    order = dag.dependency_order({task_id: task.deps for task_id, task in by_id.items()})
    return [by_id[task_id] for task_id in order]


def build_waves(plan: Plan) -> tuple[tuple[str, ...], ...]:
    """Wave 1: the tasks without dependencies; wave k: those whose deepest dependency is in wave
    k-1 (longest-path level). Ids inside a wave keep plan order."""
    return _waves(plan, dependency_order(plan))


def _waves(plan: Plan, order: list[PlanTask]) -> tuple[tuple[str, ...], ...]:
    level: dict[str, int] = {}
    for task in order:
        level[task.id] = 1 + max((level[dep] for dep in task.deps if dep in level), default=0)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=0))]
    for task in plan.tasks:
        waves[level[task.id] - 1].append(task.id)
    return tuple(tuple(wave) for wave in waves)


def critical_path(plan: Plan, estimates: Mapping[str, float]) -> tuple[tuple[str, ...], float]:
    """The chain of dependent tasks with the largest total estimate, and that total.

    Ties go to the earlier task in plan order (the earlier dependency when walking back).
    """
    return _critical_path(plan, estimates, dependency_order(plan))


def _critical_path(
    plan: Plan, estimates: Mapping[str, float], order: list[PlanTask]
) -> tuple[tuple[str, ...], float]:
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for task in order:
        deps = [dep for dep in task.deps if dep in finish]
        before = max(deps, key=finish.__getitem__, default=None)
        previous[task.id] = before
        finish[task.id] = estimates[task.id] + (0.0 if before is None else finish[before])
    if not finish:
        return (), 0.0
    path = [max((task.id for task in plan.tasks), key=finish.__getitem__)]
    while (before := previous[path[-1]]) is not None:
        path.append(before)
    return tuple(reversed(path)), finish[path[0]]


def _dependents(plan: Plan) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Who depends on each task, and how many in-plan dependencies each task waits for."""
    dependents: dict[str, list[str]] = {task.id: [] for task in plan.tasks}
    waiting: dict[str, int] = {}
    for task in plan.tasks:
        deps = [dep for dep in task.deps if dep in dependents]
        waiting[task.id] = len(deps)
        for dep in deps:
            dependents[dep].append(task.id)
    return dependents, waiting


def _tails(
    plan: Plan, estimates: Mapping[str, float], dependents: Mapping[str, list[str]]
) -> dict[str, float]:
    """For each task, the longest estimated path from its start to the end of the plan."""
    tails: dict[str, float] = {}
    for task in reversed(dependency_order(plan)):
        after = max((tails[child] for child in dependents[task.id]), default=0.0)
        tails[task.id] = estimates[task.id] + after
    return tails
