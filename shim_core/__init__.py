"""SHIM: split large work into tasks and run them on a fleet of workers through Redis.

The public surface of the core; import from here, not from the private modules::

    from shim_core import RedisConnectionManager, Settings, Task, TaskQueue

Each name is imported from its module on first use (PEP 562), so ``import shim_core.x`` costs
only what ``x`` needs: a worker process does not load the message bus's asyncio-based parts of
redis-py, nor the plan reader, just because it imported a submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shim_core import _lazy_redis
from shim_core._lazy import lazy_exports

# Before any SHIM module imports redis: what SHIM does not use of it is then loaded only if used.
_lazy_redis.install()

if TYPE_CHECKING:
    from shim_core.bus import Channels, EventStats, MessageBus
    from shim_core.config import Settings
    from shim_core.connection import ConnectionStats, RedisConnectionManager
    from shim_core.doctor import Violation, check_invariants
    from shim_core.errors import (
        ConfigError,
        ConnectionFailed,
        CorruptTask,
        DependencyCycle,
        DuplicateTask,
        InvalidTransition,
        MissingDependency,
        PayloadTooLarge,
        ShimError,
        StaleLease,
        TaskError,
        TaskNotFound,
        ValidationError,
    )
    from shim_core.history import EventBatch, EventLog, StreamedEvent
    from shim_core.keys import Keys
    from shim_core.models import (
        Claim,
        EventType,
        Priority,
        ProgressEvent,
        ProgressInfo,
        Task,
        TaskContext,
        TaskResult,
        TaskStatus,
        TaskType,
        WorkerRegistration,
        WorkerStatus,
    )
    from shim_core.queue import FailOutcome, QueueStats, TaskQueue
    from shim_core.redact import mask_url

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Channels", "EventStats", "MessageBus"), "shim_core.bus"),
    **dict.fromkeys(("EventBatch", "EventLog", "StreamedEvent"), "shim_core.history"),
    "Settings": "shim_core.config",
    **dict.fromkeys(("ConnectionStats", "RedisConnectionManager"), "shim_core.connection"),
    "mask_url": "shim_core.redact",
    **dict.fromkeys(("Violation", "check_invariants"), "shim_core.doctor"),
    **dict.fromkeys(
        (
            "ConfigError",
            "ConnectionFailed",
            "CorruptTask",
            "DependencyCycle",
            "DuplicateTask",
            "InvalidTransition",
            "MissingDependency",
            "PayloadTooLarge",
            "ShimError",
            "StaleLease",
            "TaskError",
            "TaskNotFound",
            "ValidationError",
        ),
        "shim_core.errors",
    ),
    "Keys": "shim_core.keys",
    **dict.fromkeys(
        (
            "Claim",
            "EventType",
            "Priority",
            "ProgressEvent",
            "ProgressInfo",
            "Task",
            "TaskContext",
            "TaskResult",
            "TaskStatus",
            "TaskType",
            "WorkerRegistration",
            "WorkerStatus",
        ),
        "shim_core.models",
    ),
    **dict.fromkeys(("FailOutcome", "QueueStats", "TaskQueue"), "shim_core.queue"),
}

__all__ = [
    "Channels",
    "Claim",
    "ConfigError",
    "ConnectionFailed",
    "ConnectionStats",
    "CorruptTask",
    "DependencyCycle",
    "DuplicateTask",
    "EventBatch",
    "EventLog",
    "EventStats",
    "EventType",
    "FailOutcome",
    "InvalidTransition",
    "Keys",
    "MessageBus",
    "MissingDependency",
    "PayloadTooLarge",
    "Priority",
    "ProgressEvent",
    "ProgressInfo",
    "QueueStats",
    "RedisConnectionManager",
    "Settings",
    "ShimError",
    "StaleLease",
    "StreamedEvent",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskNotFound",
    "TaskQueue",
    "TaskResult",
    "TaskStatus",
    "TaskType",
    "ValidationError",
    "Violation",
    "WorkerRegistration",
    "WorkerStatus",
    "__version__",
    "check_invariants",
    "mask_url",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, __all__)
