"""Supervisor: decompose, submit, watch and report a run; it also runs the reaper, so a crashed
worker's tasks are recovered even when no other worker is left to do it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from shim_core.bus import MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError
from shim_core.history import EventLog
from shim_core.models import Task
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.supervisor.assigner import AssignmentResult, TaskAssigner
from shim_core.supervisor.decomposer import TaskDecomposer
from shim_core.supervisor.graph import DecompositionPlan
from shim_core.supervisor.merging import merge_with_resolution
from shim_core.supervisor.plan import Plan, PlanTask, validate_plan
from shim_core.supervisor.progress import OverallProgress, ProgressAggregator
from shim_core.supervisor.runs import (
    RunRecord,
    RunReport,
    TaskReport,
    build_report,
    cancel_run,
    load_run,
    plan_id_of,
    retry_run,
    submit_run,
)
from shim_core.worker.recovery import RecoveryReport, WorkerCrashRecovery
from shim_core.worktrees import MergeReport


class RunTimeout(ShimError):
    def __init__(self, run_id: str, timeout: float) -> None:
        super().__init__(f"run {run_id} did not finish within {timeout:g} s")
        self.run_id = run_id


class Supervisor:
    """The high-level API: ``execute_tasks(tasks)`` or decompose / submit / wait."""

    def __init__(
        self,
        connection: RedisConnectionManager,
        settings: Settings,
        *,
        plugins: Plugins | None = None,
        reap_interval: float = 0.5,
    ) -> None:
        self.settings = settings
        self.plugins = plugins if plugins is not None else Plugins()
        self.queue = TaskQueue(connection, settings)
        self.registry = WorkerRegistry(connection, settings)
        self.bus = MessageBus(connection, settings)
        self.history = EventLog(connection, settings)
        self.assigner = TaskAssigner(self.queue, self.registry)
        backend = self.plugins.backends.get("redis")
        store = (
            CheckpointStore(backend.create(connection, settings), self.queue) if backend else None
        )
        self.recovery = WorkerCrashRecovery(self.registry, self.queue, store)
        self.reap_interval = reap_interval
        self.aggregator: ProgressAggregator | None = None
        self._started = False

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the reaper (idempotent)."""
        if not self._started:
            self.recovery.start_monitoring(self.reap_interval)
            self._started = True

    def stop(self) -> None:
        if self._started:
            self.recovery.stop_monitoring()
            self._started = False
        if self.aggregator is not None:
            self.aggregator.stop()
        self.bus.close()

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ plans
    def decompose(
        self,
        request: str,
        strategy: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> DecompositionPlan:
        """Turn a plan file or request into tasks and waves (refusing bad input)."""
        return self._decomposer().decompose(request, strategy, context)

    def _decomposer(self) -> TaskDecomposer:
        """A decomposer whose estimates use the durations measured in this namespace."""
        return TaskDecomposer(self.plugins, history=self.queue.duration_history())

    def submit(
        self, decomposition: DecompositionPlan, *, budget_usd: float | None = None
    ) -> RunRecord:
        """Enqueue a decomposed plan as a new run (``budget_usd`` overrides the plan's)."""
        return submit_run(self.queue, decomposition, budget_usd=budget_usd)

    def merge(self, run_id: str) -> MergeReport | None:
        """Merge the completed tasks' branches of a worktree run into ``shim/<run>/@merged``,
        dependencies first (with ``on_conflict: agent``, conflicts are resolved by an agent
        task added to the run); None for a run without worktrees."""
        run = load_run(self.queue, run_id)
        if run.repo is None or run.workspace != "worktree":
            return None
        return merge_with_resolution(self.queue, run, self._wait_for)

    def _wait_for(self, task_id: str) -> Task | None:
        """Block until one task is final (driven by its events, reconciled from Redis)."""
        view = ProgressAggregator(
            self.bus, self.registry, self.queue, [task_id], history=self.history
        )
        view.start()
        try:
            while not view.get_overall_progress().finished:
                view.wait_for_change(1.0)
        finally:
            view.stop()
        return self.queue.get(task_id)

    def watch(self, run: RunRecord) -> ProgressAggregator:
        """A started progress view of ``run`` (also kept as :attr:`aggregator`)."""
        if self.aggregator is not None:
            self.aggregator.stop()
        estimates = {f"{run.run_id}:{k}": v for k, v in run.estimates.items()}
        self.aggregator = ProgressAggregator(
            self.bus,
            self.registry,
            self.queue,
            run.task_ids,
            estimates=estimates,
            dependencies=run.dependencies(),
            history=self.history,
        )
        self.aggregator.start()
        return self.aggregator

    def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[OverallProgress], None] | None = None,
        interval: float = 0.5,
    ) -> RunReport:
        """Block until every task of the run is final; returns the report."""
        run = load_run(self.queue, run_id)
        aggregator = self.watch(run)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            progress = aggregator.get_overall_progress()
            if on_update is not None:
                on_update(progress)
            if progress.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(run_id, timeout or 0)
            aggregator.wait_for_change(interval)
        aggregator.reconcile()
        merged = self.merge(run_id)  # may add conflict resolvers to the run: report after it
        report = self.report(load_run(self.queue, run_id), aggregator.completion_order)
        return attrs.evolve(report, merge=merged) if merged is not None else report

    def report(self, run: RunRecord, order: Sequence[str] = ()) -> RunReport:
        tasks = [t for t in self.queue.get_many(run.task_ids) if t is not None]
        return build_report(run, tasks, order)

    def execute_tasks(
        self, tasks: Sequence[Task], *, name: str = "tasks", timeout: float | None = None
    ) -> list[TaskReport]:
        """Run ``tasks`` (ids and dependencies local to this call) as one run; returns their
        reports in completion order."""
        plan = Plan(
            name=name,
            source="execute_tasks",
            tasks=tuple(
                PlanTask(
                    id=t.id,
                    title=t.title or t.id,
                    type=t.type,
                    executor=t.executor,
                    params=dict(t.params),
                    description=t.description,
                    priority=t.priority,
                    deps=t.dependencies,
                    max_attempts=t.max_attempts,
                    timeout=t.timeout_ms / 1000 if t.timeout_ms else None,
                    estimate=t.estimated_duration / 1000 if t.estimated_duration else None,
                )
                for t in tasks
            ),
        )
        validate_plan(plan)
        decomposition = self._decomposer().decompose_plan(plan, request=name)
        self.start()
        run = self.submit(decomposition)
        return list(self.wait(run.run_id, timeout=timeout).tasks)

    # ------------------------------------------------------------- assigning
    def assign_task(self, task: Task) -> AssignmentResult:
        return self.assigner.assign_task(task)

    def cancel_run(self, run_id: str, reason: str = "run cancelled") -> int:
        """Cancel every unfinished task of a run; returns how many were cancelled."""
        return cancel_run(self.queue, run_id, reason)

    def retry_run(self, run_id: str) -> list[str]:
        """Run every failed or cancelled task of a run again; returns their ids."""
        return retry_run(self.queue, run_id)

    # ---------------------------------------------------------------- queries
    def get_overall_progress(self) -> OverallProgress | None:
        return self.aggregator.get_overall_progress() if self.aggregator else None

    def detect_and_recover(self) -> RecoveryReport:
        """One reaper pass now (the background reaper runs them every ``reap_interval``)."""
        return self.recovery.detect_and_recover()

    def get_recovery_report(self) -> RecoveryReport:
        """What the reaper of this supervisor recovered in its latest passes that found
        something (the last 100; ``self.recovery.total`` counts everything)."""
        return self.recovery.recent_report()


__all__ = ["RunTimeout", "Supervisor", "plan_id_of"]
