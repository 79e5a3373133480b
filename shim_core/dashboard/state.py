"""DashboardState: what the dashboard reads, through the store layer only (TaskQueue, the
registry, the run helpers, the event log and the checkpoint store), as JSON-able dicts."""

from __future__ import annotations

import time
from typing import Any

import attrs

from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard import runs as run_views
from shim_core.dashboard.encoding import finite
from shim_core.dashboard.events import task_history
from shim_core.dashboard.tasks import LOG_TAIL, task_detail
from shim_core.errors import TaskNotFound
from shim_core.history import EventLog
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.roster import WorkerView, roster


@attrs.define
class DashboardState:
    """The dashboard's reads of one namespace."""

    queue: TaskQueue
    registry: WorkerRegistry
    log: EventLog
    connection: RedisConnectionManager
    _checkpoints: list[CheckpointStore | None] = attrs.field(factory=list, init=False)

    @classmethod
    def open(cls, connection: RedisConnectionManager, settings: Settings) -> DashboardState:
        """The reads of ``settings.namespace`` over ``connection``."""
        return cls(
            TaskQueue(connection, settings),
            WorkerRegistry(connection, settings),
            EventLog(connection, settings),
            connection,
        )

    @property
    def namespace(self) -> str:
        return self.queue.settings.namespace

    def workers(self) -> list[dict[str, Any]]:
        """The fleet: live workers, and crashed or offline ones until they age out."""
        return [_worker_json(v) for v in roster(self.queue, self.registry).workers]

    def tick(self) -> dict[str, Any]:
        """What changes without an event: heartbeats (so the workers) and the pause switch."""
        return {
            "server_time": _now_ms(),
            "namespace": self.namespace,
            "paused": self.queue.is_paused(),
            "workers": self.workers(),
        }

    def snapshot(self, run_id: str | None = None, *, runs: bool = True) -> dict[str, Any]:
        """The state a page starts from: the tick, plus that run's tasks (RunNotFound when there
        is no such run), or without a run the run summaries (unless ``runs`` is false)."""
        data = self.tick()
        live = live_workers(data["workers"])
        if run_id is None and runs:
            data["runs"] = run_views.run_summaries(self.queue, live)
        elif run_id is not None:
            data["run"] = run_views.run_detail(self.queue, run_id, live)
        return data

    def task_snapshot(self, task_id: str, until: str) -> dict[str, Any]:
        """The state a task's page starts from: the tick and the task's events up to history
        entry ``until`` (TaskNotFound when there is no such task)."""
        return self.tick() | {"history": self.task_history(task_id, until)}

    def runs(self, limit: int = run_views.RUNS_LISTED) -> list[dict[str, Any]]:
        """Summaries of the runs submitted last, newest first."""
        return run_views.run_summaries(self.queue, self._live(), limit)

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's summary, waves and tasks (RunNotFound when there is no such run)."""
        return run_views.run_detail(self.queue, run_id, self._live())

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Totals, ETA and cost of one run."""
        return run_views.run_summary(self.queue, run_id, self._live())

    def _live(self) -> int:
        return live_workers(self.workers())

    def task(self, task_id: str) -> dict[str, Any]:
        """Everything the task page shows (TaskNotFound when there is no such task)."""
        return task_detail(self.queue, task_id, self.checkpoints())

    def task_log(self, task_id: str) -> list[str]:
        """The newest lines of the task's log (what a running task's page polls)."""
        return self.queue.log_tail(task_id, LOG_TAIL)

    def task_history(self, task_id: str, until: str | None = None) -> list[dict[str, Any]]:
        """The task's events still in the history (its attempts, retries, stalls), up to entry
        ``until`` (None: the newest); TaskNotFound when there is no such task."""
        task = self.queue.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task_history(self.log, task, until)

    def checkpoints(self) -> CheckpointStore | None:
        """The namespace's checkpoint store (the ``redis`` backend plugin), made on first use
        (loading the plugins is left out of the dashboard's start)."""
        if not self._checkpoints:
            from shim_core.plugins import Plugins

            factory = Plugins().backends.get("redis")
            backend = factory.create(self.connection, self.queue.settings) if factory else None
            self._checkpoints.append(CheckpointStore(backend, self.queue) if backend else None)
        return self._checkpoints[0]


def live_workers(workers: list[dict[str, Any]]) -> int:
    """How many of ``workers`` (as :meth:`DashboardState.workers` gives them) are live: the one
    count the ETAs of every view use."""
    return sum(1 for w in workers if not w["gone"])


def _worker_json(view: WorkerView) -> dict[str, Any]:
    w = view.worker
    return {
        "id": w.id,
        "name": w.name or w.id,
        "host": w.host,
        "pid": w.pid,
        "status": view.status,
        "gone": view.gone,
        "running": list(view.running),
        "age_s": None if view.age is None else round(view.age, 1),
        "completed": w.stats.tasks_completed,
        "failed": w.stats.tasks_failed,
        "avg_ms": round(finite(w.stats.avg_duration, 0.0) or 0.0, 1),
        "concurrency": w.capabilities.max_concurrent_tasks,
        "types": list(w.capabilities.supported_task_types),
        "refused_agents": dict(w.refused_agents),
        "denied_executors": list(w.denied_executors),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)
