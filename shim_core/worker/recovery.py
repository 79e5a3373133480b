"""WorkerCrashRecovery: the reaper (seed component 11).

It runs in every worker (and the supervisor): each pass declares crashed the workers that missed
their heartbeats or whose process is gone, requeues their tasks (attempt + 1 on the next claim,
stall counted), and returns expired leases to pending. Every step is one idempotent Lua script,
so any number of reapers may run at once. The next claimer of a requeued task receives its latest
checkpoint as ``ctx.resume_state``, so it resumes instead of restarting.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping

import attrs

from shim_core.checkpoints import CheckpointStore
from shim_core.models import TaskStatus
from shim_core.outage import OutageLog
from shim_core.queue import TaskQueue
from shim_core.registry import CrashedWorker, WorkerRegistry

log = logging.getLogger(__name__)

#: Passes that recovered something kept for :meth:`WorkerCrashRecovery.recent_report`.
RECENT_REPORTS = 100

#: Lifetime of the reaper lock: at most one pass per this many ms in a namespace (a little under
#: the default reap interval of 0.5 s).
REAPER_LOCK_MS = 450


@attrs.frozen
class RecoveryReport:
    """What one reaper pass found and did."""

    crashed_workers: list[CrashedWorker] = attrs.Factory(list)
    reassigned_tasks: list[str] = attrs.Factory(list)  # back to pending for another worker
    failed_tasks: list[str] = attrs.Factory(list)  # stalled too often: failed for good
    stalled_tasks: list[str] = attrs.Factory(list)  # lease expired (not from a crash)
    #: task id -> whether a checkpoint exists for the next claimer to resume from
    resumed_from_checkpoint: dict[str, bool] = attrs.Factory(dict)

    @property
    def empty(self) -> bool:
        return not (self.crashed_workers or self.stalled_tasks)


@attrs.frozen
class RecoveryTotals:
    """How much the reaper of one process recovered since it started: counts only, so that a
    process reaping for months holds no growing list."""

    crashed_workers: int = 0
    reassigned_tasks: int = 0
    failed_tasks: int = 0
    stalled_tasks: int = 0
    resumed_from_checkpoint: int = 0

    def plus(self, report: RecoveryReport) -> RecoveryTotals:
        return RecoveryTotals(
            crashed_workers=self.crashed_workers + len(report.crashed_workers),
            reassigned_tasks=self.reassigned_tasks + len(report.reassigned_tasks),
            failed_tasks=self.failed_tasks + len(report.failed_tasks),
            stalled_tasks=self.stalled_tasks + len(report.stalled_tasks),
            resumed_from_checkpoint=self.resumed_from_checkpoint
            + sum(report.resumed_from_checkpoint.values()),
        )


class WorkerCrashRecovery:
    """Detects crashed workers and recovers their tasks."""

    def __init__(
        self,
        registry: WorkerRegistry,
        queue: TaskQueue,
        checkpoints: CheckpointStore | None,
        *,
        outage: OutageLog | None = None,
    ) -> None:
        self.outage = outage or OutageLog(log)
        self.registry = registry
        self.queue = queue
        self.checkpoints = checkpoints
        self.last_report = RecoveryReport()
        #: How much was recovered since this object was created.
        self.total = RecoveryTotals()
        #: The latest passes that recovered something (bounded: a reaper runs for months).
        self.recent: deque[RecoveryReport] = deque(maxlen=RECENT_REPORTS)
        self._totals_lock = threading.Lock()
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def detect_and_recover(self) -> RecoveryReport:
        """One reaper pass."""
        crashed = self.registry.detect_crashed_workers()
        stalled = self.queue.reap_stalled()
        report = self._report(crashed, stalled)
        self.passes += 1
        self.last_report = report
        if not report.empty:
            with self._totals_lock:
                self.total = self.total.plus(report)
                self.recent.append(report)
        for worker in crashed:
            log.warning(
                "worker %s %s; requeued %d task(s)",
                worker.worker_id,
                worker.reason,
                len(worker.tasks),
            )
        return report

    def recover_worker(self, worker_id: str) -> RecoveryReport:
        """Declare one worker crashed now and requeue its tasks."""
        crashed = self.registry.declare_crashed(worker_id)
        report = self._report([crashed] if crashed else [], {})
        if not report.empty:
            with self._totals_lock:
                self.total = self.total.plus(report)
                self.recent.append(report)
        return report

    def recent_report(self) -> RecoveryReport:
        """The passes of :attr:`recent` as one report (oldest first)."""
        merged = RecoveryReport()
        with self._totals_lock:
            reports = list(self.recent)
        for report in reports:
            merged.crashed_workers.extend(report.crashed_workers)
            merged.reassigned_tasks.extend(report.reassigned_tasks)
            merged.failed_tasks.extend(report.failed_tasks)
            merged.stalled_tasks.extend(report.stalled_tasks)
            merged.resumed_from_checkpoint.update(report.resumed_from_checkpoint)
        return merged

    def start_monitoring(self, interval: float) -> None:
        """Run a pass every ``interval`` seconds on a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), daemon=True, name="shim-reaper"
        )
        self._thread.start()

    def stop_monitoring(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self, interval: float) -> None:
        # One sweeper at a time: every process runs this loop, but a pass only runs in the
        # process that takes the namespace's reaper lock for the interval, so Redis does one pass
        # per interval whatever the size of the fleet. A holder that dies lets the lock expire.
        # The lock lives REAPER_LOCK_MS whatever this process's interval, so one process with a
        # long interval cannot hold back the reaping of the whole fleet.
        while not self._stop.wait(interval):
            try:
                if self.queue.take_reaper_lock(REAPER_LOCK_MS):
                    self.detect_and_recover()
                self.outage.succeeded()
            except Exception as exc:  # keep reaping: the next pass may succeed
                self.outage.failed("a reaper pass", exc)

    def _report(
        self, crashed: list[CrashedWorker], stalled: Mapping[str, TaskStatus]
    ) -> RecoveryReport:
        outcomes: dict[str, str] = {}
        for worker in crashed:
            outcomes.update(worker.tasks)
        outcomes.update({k: v.value for k, v in stalled.items()})
        reassigned = sorted(t for t, s in outcomes.items() if s == "pending")
        resumed = {t: self._has_checkpoint(t) for t in reassigned}
        return RecoveryReport(
            crashed_workers=crashed,
            reassigned_tasks=reassigned,
            failed_tasks=sorted(t for t, s in outcomes.items() if s == "failed"),
            stalled_tasks=sorted(stalled),
            resumed_from_checkpoint=resumed,
        )

    def _has_checkpoint(self, task_id: str) -> bool:
        return self.checkpoints is not None and self.checkpoints.latest(task_id) is not None
