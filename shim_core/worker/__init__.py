"""The worker side of SHIM: claiming, executing, reporting, recovering."""

from shim_core.worker.claimer import TaskClaimer
from shim_core.worker.context import TaskExecution
from shim_core.worker.executor import ExecutionOutcome, WorkExecutor
from shim_core.worker.recovery import RecoveryReport, RecoveryTotals, WorkerCrashRecovery
from shim_core.worker.reporter import LocalStats, ProgressReporter
from shim_core.worker.runtime import Worker, WorkerConfig

__all__ = [
    "ExecutionOutcome",
    "LocalStats",
    "ProgressReporter",
    "RecoveryReport",
    "RecoveryTotals",
    "TaskClaimer",
    "TaskExecution",
    "WorkExecutor",
    "Worker",
    "WorkerConfig",
    "WorkerCrashRecovery",
]
