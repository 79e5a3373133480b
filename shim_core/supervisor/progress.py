"""ProgressAggregator: one live view of a run's progress (seed component 7).

Given the namespace's :class:`~shim_core.history.EventLog`, the view reads the state once, then
follows the durable event stream from the entry that was newest before that read: no event is
missed, and the tasks are read again only every ``FULL_RECONCILE`` seconds as a safety net (a
stream trimmed past the cursor); the workers, which have no history, every ``reconcile_interval``.
Without one it subscribes to pub/sub and reconciles everything every ``reconcile_interval``
seconds, so a lost message never leaves it wrong for long. The
completion estimate schedules the remaining work over the live workers in dependency order, so it
accounts for the dependency chain still ahead, not just an average rate.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from shim_core.bus import Channels, MessageBus
from shim_core.history import EventLog
from shim_core.models import EventType, ProgressEvent, TaskStatus
from shim_core.queue import TaskQueue, TaskState
from shim_core.registry import WorkerRegistry

#: Seconds assumed for a task without any estimate.
FALLBACK_ESTIMATE = 30.0
#: Seconds between two reads of every tracked task when the view follows the event stream.
FULL_RECONCILE = 10.0
#: Longest blocking read of the stream: bounds how long stop() takes.
_STOP_CHECK = 0.5
QUEUED = frozenset({TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.RETRYING})


@attrs.frozen
class TaskProgress:
    status: TaskStatus
    progress: float
    worker_id: str | None
    last_update: float  # time.monotonic() of the last change seen
    attempts: int = 0
    message: str = ""


@attrs.frozen
class WorkerProgress:
    current_task: str | None
    tasks_completed: int
    tasks_failed: int
    avg_task_duration: float  # ms


@attrs.frozen
class OverallProgress:
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    running_tasks: int
    queued_tasks: int
    percent_complete: float  # 0..1, running tasks counted by their progress
    estimated_time_remaining: float | None  # seconds; None when no worker is live
    live_workers: int
    task_breakdown: dict[str, TaskProgress]
    worker_breakdown: dict[str, WorkerProgress]

    @property
    def finished(self) -> bool:
        return self.completed_tasks + self.failed_tasks + self.cancelled_tasks == self.total_tasks


Callback = Callable[[str, TaskProgress], None]


class ProgressAggregator:
    """Tracks ``task_ids`` (a run) through events and Redis state."""

    def __init__(
        self,
        bus: MessageBus,
        registry: WorkerRegistry,
        queue: TaskQueue,
        task_ids: Sequence[str],
        *,
        estimates: Mapping[str, float] | None = None,
        dependencies: Mapping[str, Sequence[str]] | None = None,
        reconcile_interval: float = 1.0,
        history: EventLog | None = None,
    ) -> None:
        self.bus = bus
        self.history = history
        self.registry = registry
        self.queue = queue
        self.task_ids = list(task_ids)
        self._tracked = frozenset(self.task_ids)
        self.estimates = dict(estimates or {})
        self.dependencies = {k: tuple(v) for k, v in (dependencies or {}).items()}
        self.reconcile_interval = reconcile_interval
        self.completion_order: list[str] = []
        self._final: set[str] = set()
        self._tasks: dict[str, TaskProgress] = {}
        self._workers: dict[str, WorkerProgress] = {}
        self._live_workers = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._callbacks: dict[str, list[Callback]] = {"progress": [], "complete": [], "failed": []}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Read the current state and follow the task events in the background (the event
        stream from just before that read, else pub/sub with periodic reconciling)."""
        if self.history is not None:
            cursor = self.history.last_id()
            self.reconcile()
            target = lambda: self._follow(cursor)  # noqa: E731
        else:
            self.bus.psubscribe(Channels.TASK_EVENTS, self.handle_event)
            self.reconcile()
            target = self._loop
        self._thread = threading.Thread(target=target, daemon=True, name="shim-progress")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.history is None:
            self.bus.punsubscribe(Channels.TASK_EVENTS)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def on_progress_update(self, callback: Callback) -> None:
        self._callbacks["progress"].append(callback)

    def on_task_complete(self, callback: Callback) -> None:
        self._callbacks["complete"].append(callback)

    def on_task_failed(self, callback: Callback) -> None:
        self._callbacks["failed"].append(callback)

    # ------------------------------------------------------------------ input
    def handle_event(self, event: ProgressEvent, channel: str) -> None:
        """Apply one bus event (ignored unless it is about a tracked task)."""
        if event.task_id not in self._tracked or event.status is None:
            return
        message = event.progress.message or "" if event.progress else ""
        with self._lock:
            old = self._tasks.get(event.task_id)
            progress = (
                1.0
                if event.status is TaskStatus.COMPLETE
                else (
                    event.progress.percentage
                    if event.progress
                    else (old.progress if old and event.type is EventType.PROGRESS else 0.0)
                )
            )
            entry = TaskProgress(
                status=event.status,
                progress=progress,
                worker_id=event.worker_id or (old.worker_id if old else None),
                last_update=time.monotonic(),
                attempts=event.attempt or 0,
                message=message,
            )
            self._tasks[event.task_id] = entry
            if event.status.is_final:
                self._mark_final((event.task_id,))
            self._changed.notify_all()
        self._notify(event.task_id, entry)

    def reconcile(self) -> None:
        """Rebuild the view from Redis (tasks, then workers)."""
        tasks = self.queue.states(self.task_ids)
        now = time.monotonic()
        with self._lock:
            for task in tasks:
                self._reconcile_task(task, now)
            newly_final = sorted(
                (t for t in tasks if t.status.is_final and t.id not in self._final),
                key=lambda t: (t.completed_at.timestamp() if t.completed_at else 0.0, t.id),
            )
            self._mark_final(t.id for t in newly_final)
        self._reconcile_workers()

    def _reconcile_workers(self) -> None:
        workers = self.registry.get_active_workers()
        with self._lock:
            self._live_workers = len(workers)
            self._workers = {
                w.id: WorkerProgress(
                    current_task=w.current_task.task_id if w.current_task else None,
                    tasks_completed=w.stats.tasks_completed,
                    tasks_failed=w.stats.tasks_failed,
                    avg_task_duration=w.stats.avg_duration,
                )
                for w in workers
            }
            self._changed.notify_all()

    def _mark_final(self, task_ids: Iterable[str]) -> None:
        """Append tasks that became final to ``completion_order`` (once each; lock held)."""
        for task_id in task_ids:
            if task_id not in self._final:
                self._final.add(task_id)
                self.completion_order.append(task_id)

    def wait_for_change(self, timeout: float) -> None:
        """Block until an event or a reconcile changed the view, or ``timeout`` seconds."""
        with self._lock:
            self._changed.wait(timeout)

    # ---------------------------------------------------------------- queries
    def get_overall_progress(self) -> OverallProgress:
        with self._lock:
            tasks = dict(self._tasks)
            workers = dict(self._workers)
            live = self._live_workers
        counts = {s: 0 for s in TaskStatus}
        for entry in tasks.values():
            counts[entry.status] += 1
        total = len(self.task_ids)
        done = sum(1.0 if e.status.is_final else e.progress for e in tasks.values())
        return OverallProgress(
            total_tasks=total,
            completed_tasks=counts[TaskStatus.COMPLETE],
            failed_tasks=counts[TaskStatus.FAILED],
            cancelled_tasks=counts[TaskStatus.CANCELLED],
            running_tasks=counts[TaskStatus.RUNNING] + counts[TaskStatus.CLAIMED],
            queued_tasks=sum(counts[s] for s in QUEUED) + total - len(tasks),
            percent_complete=done / total if total else 1.0,
            estimated_time_remaining=self._remaining(tasks, live),
            live_workers=live,
            task_breakdown=tasks,
            worker_breakdown=workers,
        )

    def get_task_progress(self, task_id: str) -> TaskProgress | None:
        with self._lock:
            return self._tasks.get(task_id)

    def get_worker_progress(self, worker_id: str) -> WorkerProgress | None:
        with self._lock:
            return self._workers.get(worker_id)

    def detect_stalled_tasks(self, threshold: float) -> list[str]:
        """Running tasks with no progress or event for ``threshold`` seconds."""
        now = time.monotonic()
        with self._lock:
            return sorted(
                task_id
                for task_id, e in self._tasks.items()
                if e.status.is_active and now - e.last_update > threshold
            )

    def get_completion_estimate(self) -> datetime | None:
        """When the run should end, or None while no worker is live."""
        remaining = self.get_overall_progress().estimated_time_remaining
        return None if remaining is None else datetime.now(UTC) + timedelta(seconds=remaining)

    # -------------------------------------------------------------- internals
    def _reconcile_task(self, task: TaskState, now: float) -> None:
        old = self._tasks.get(task.id)
        progress = 1.0 if task.status is TaskStatus.COMPLETE else task.progress
        changed = old is None or old.status is not task.status or old.progress != progress
        self._tasks[task.id] = TaskProgress(
            status=task.status,
            progress=progress,
            worker_id=task.worker_id,
            last_update=now if changed else old.last_update,  # type: ignore[union-attr]
            attempts=task.attempts,
            message=task.progress_message,
        )

    def _remaining(self, tasks: Mapping[str, TaskProgress], workers: int) -> float | None:
        left = {
            tid: self.estimates.get(tid, FALLBACK_ESTIMATE) * (1 - e.progress)
            for tid, e in tasks.items()
            if not e.status.is_final
        }
        left.update(
            {t: self.estimates.get(t, FALLBACK_ESTIMATE) for t in self.task_ids if t not in tasks}
        )
        if not left:
            return 0.0
        if workers <= 0:
            return None
        return schedule_makespan(left, self.dependencies, workers)

    def _notify(self, task_id: str, entry: TaskProgress) -> None:
        kind = {TaskStatus.COMPLETE: "complete", TaskStatus.FAILED: "failed"}.get(
            entry.status, "progress"
        )
        for callback in self._callbacks[kind]:
            callback(task_id, entry)

    def _loop(self) -> None:
        while not self._stop.wait(self.reconcile_interval):
            try:
                self.reconcile()
            except Exception:  # the next pass retries; the view stays event-driven meanwhile
                continue

    def _follow(self, cursor: str) -> None:
        """Apply the stream's events after ``cursor`` as they come (blocking reads, no polling);
        refresh the workers every ``reconcile_interval`` and everything every FULL_RECONCILE."""
        assert self.history is not None
        now = time.monotonic()
        workers_due, full_due = now + self.reconcile_interval, now + FULL_RECONCILE
        while not self._stop.is_set():
            try:
                wait = min(_STOP_CHECK, workers_due - time.monotonic())
                batch = self.history.wait(cursor, max(0.05, wait))
                for item in batch:
                    self.handle_event(item.event, "")
                cursor = batch.cursor
                now = time.monotonic()
                if now >= full_due:
                    self.reconcile()
                    full_due = now + FULL_RECONCILE
                    workers_due = now + self.reconcile_interval
                elif now >= workers_due:
                    self._reconcile_workers()
                    workers_due = now + self.reconcile_interval
            except Exception:  # Redis away: wait a beat; the next read resumes at the cursor
                self._stop.wait(self.reconcile_interval)


def schedule_makespan(
    durations: Mapping[str, float], dependencies: Mapping[str, Sequence[str]], workers: int
) -> float:
    """Time to run ``durations`` on ``workers`` in dependency order (greedy list scheduling;
    dependencies outside ``durations`` count as done)."""
    pending = {t: [d for d in dependencies.get(t, ()) if d in durations] for t in durations}
    finish: dict[str, float] = {}
    free = [0.0] * max(workers, 1)
    heapq.heapify(free)
    while pending:
        ready = [t for t, deps in pending.items() if all(d in finish for d in deps)]
        if not ready:  # a cycle cannot be scheduled; count the rest serially
            return max(free) + sum(durations[t] for t in pending)
        for task in sorted(ready, key=lambda t: -durations[t]):
            start = max(heapq.heappop(free), max((finish[d] for d in pending[task]), default=0.0))
            finish[task] = start + durations[task]
            heapq.heappush(free, finish[task])
            del pending[task]
    return max(finish.values(), default=0.0)
