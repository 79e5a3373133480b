"""SHIM: split large work into tasks and run them on a fleet of workers through Redis.

The public surface of the core; import from here, not from the private modules::

    from shim_core import RedisConnectionManager, Settings, Task, TaskQueue
"""

from shim_core.bus import Channels, EventStats, MessageBus
from shim_core.config import Settings
from shim_core.connection import ConnectionStats, RedisConnectionManager, mask_url
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

__version__ = "0.1.0"

__all__ = [
    "Channels",
    "Claim",
    "ConfigError",
    "ConnectionFailed",
    "ConnectionStats",
    "CorruptTask",
    "DependencyCycle",
    "DuplicateTask",
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
