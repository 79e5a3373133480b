"""The values that cross process boundaries: tasks, results, workers and events.

All are frozen attrs classes; :mod:`shim_core.serde` turns them into JSON and Redis hashes (never
pickle). Field names follow the seed specification in snake_case.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import attrs


class Priority(enum.Enum):
    """Strict priority bands: every critical task is claimed before any high one, and so on."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def band(self) -> int:
        """0 for critical ... 3 for low: the high part of a ready-queue score."""
        return _BANDS[self]


_BANDS = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class TaskType:
    """The five built-in task types of the seed. Types are open: plugins add their own strings."""

    CODE = "code"
    RESEARCH = "research"
    TEST = "test"
    DOCUMENT = "document"
    ANALYZE = "analyze"

    BUILTIN: tuple[str, ...] = ("code", "research", "test", "document", "analyze")


class TaskStatus(enum.Enum):
    """Where a task is in its lifecycle; each status maps to exactly one Redis state set."""

    WAITING = "waiting"  # dependencies not complete yet
    PENDING = "pending"  # claimable
    CLAIMED = "claimed"  # leased, not started
    RUNNING = "running"  # leased, executing
    RETRYING = "retrying"  # failed with attempts left, in backoff
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in (TaskStatus.CLAIMED, TaskStatus.RUNNING)


FINAL_STATUSES = frozenset({TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED})


class WorkerStatus(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    CRASHED = "crashed"
    OFFLINE = "offline"


class EventType(enum.Enum):
    """Kinds of :class:`ProgressEvent`: the seed's five plus the queue's other transitions."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    HEARTBEAT = "heartbeat"
    RETRYING = "retrying"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    RELEASED = "released"  # became claimable: dependencies complete, backoff over, or released
    REGISTERED = "registered"  # worker events (channel worker:<type>)
    CRASHED = "crashed"
    OFFLINE = "offline"


class TaskOutcome(enum.Enum):
    """How an execution ended, typed: what an executor reports and the core acts on.

    Executors that report nothing get ``SUCCESS`` or ``FAILED`` from ``TaskResult.success``. The
    core decides what each outcome means (see :mod:`shim_core.outcomes`): a rate limit puts the
    task back without using an attempt and cools the agent down fleet-wide, an auth failure or a
    missing CLI fails the task at once and the worker stops claiming that agent's tasks, and so on.
    """

    SUCCESS = "success"
    FAILED = "failed"  # the tool reported an error, or no final result at all
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    MAX_TURNS = "max_turns"
    BUDGET_EXCEEDED = "budget_exceeded"
    STALLED = "stalled"  # no output for the idle timeout: killed
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    CLI_MISSING = "cli_missing"
    CRASHED = "crashed"  # the process died (signal, or an exit code without any result)
    REJECTED = "rejected"  # never run: its signature does not verify


def new_id() -> str:
    """A fresh random id (UUID4, hex)."""
    return uuid.uuid4().hex


@attrs.frozen(kw_only=True)
class TaskContext:
    """Where and with what a task works."""

    files: tuple[str, ...] = ()
    checkpoint_id: str | None = None
    session_id: str = ""
    project_path: str = ""
    #: What "done" means for this task, one criterion a line (agent prompts carry them).
    acceptance: tuple[str, ...] = ()
    #: The git repository the task works on (a local path or a URL); empty: none.
    repo: str = ""
    #: The run's base commit in ``repo``: task branches start from it.
    base: str = ""
    #: ``worktree`` (a git worktree per task, on branch ``shim/<run>/<task>``), ``shared``
    #: (the repository's own checkout) or empty (the executor's default).
    workspace: str = ""


@attrs.frozen(kw_only=True)
class TaskResult:
    """What an execution produced. ``output`` is any JSON value."""

    success: bool
    output: Any = None
    files_modified: tuple[str, ...] = ()
    checkpoint_created: str | None = None
    error: str | None = None
    duration_ms: int | None = None
    #: Typed outcome (None: ``success`` decides). Agent executors always set it.
    outcome: TaskOutcome | None = None
    #: Money this execution spent (agent tasks), added to its run's total by the core.
    cost_usd: float | None = None
    #: With ``RATE_LIMITED``: when the limit resets (epoch ms), if the tool said so.
    retry_at_ms: int | None = None


# Not slotted: with 37 fields, filling an instance dictionary (attrs' frozen ``__init__`` writes
# ``__dict__`` items) costs a third less than 37 slot writes through ``object.__setattr__``, and
# the queue copies a task in one ``dict.update`` (serde.evolve_task). Every task added or claimed
# is built at least once: both are hot paths. The price is memory: about 1.9 KB a task instead
# of 0.6 KB (the dictionaries do not share their keys), paid where many tasks are held at once
# (a 5,000-task listing: about 6 MB more, for as long as it is held).
@attrs.frozen(kw_only=True, slots=False)
class Task:
    """One unit of work. Fields after ``run_id`` are kept by the queue; callers leave them at their
    defaults when adding a task."""

    id: str = attrs.field(factory=new_id)
    type: str = TaskType.CODE
    title: str = ""
    description: str = ""
    priority: Priority = Priority.NORMAL
    dependencies: tuple[str, ...] = ()
    parent_task_id: str | None = None
    context: TaskContext = TaskContext()
    executor: str | None = None
    params: dict[str, Any] = attrs.field(factory=dict)
    assigned_to: str | None = None
    max_attempts: int | None = None
    backoff_ms: int | None = None
    max_stalled: int | None = None
    timeout_ms: int | None = None
    estimated_duration: int | None = None
    run_id: str | None = None
    #: When this task fails for good: ``cancel-dependents`` (None, the default) or ``continue``
    #: (its dependents run anyway).
    on_failure: str | None = None
    #: The coding-agent provider this task runs (``params.agent`` of an ``agent`` task, filled in
    #: by the queue): claims skip it while that agent cools down after a rate limit, workers
    #: that cannot run the agent skip it, and a spent run budget cancels it.
    agent: str | None = None
    #: HMAC of the fields that decide what runs (see :mod:`shim_core.signing`), written by a
    #: queue whose settings carry a secret; workers that hold the secret run nothing without it.
    signature: str | None = None
    # --- kept by the queue ---
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    stalls: int = 0
    lease: int = 0
    worker_id: str | None = None
    progress: float = 0.0
    progress_message: str = ""
    deps_left: int = 0
    result: TaskResult | None = None
    created_at: datetime | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    due_at: datetime | None = None
    lease_deadline: datetime | None = None
    actual_duration: int | None = None

    @property
    def queue(self) -> str:
        """The ready queue this task waits in: its type, or ``@<worker>`` when targeted."""
        return f"@{self.assigned_to}" if self.assigned_to else self.type


@attrs.frozen(kw_only=True)
class Claim:
    """A claimed task and the lease token (fencing token) that proves the claim."""

    task: Task
    token: int
    #: When the task became claimable, in server ms, as stored (its ``ready_at`` field; not
    #: decoded: only the claim-latency metric reads it, and it may be anything).
    ready_at_ms: str | None = None


@attrs.frozen(kw_only=True)
class ProgressInfo:
    current: int
    total: int
    percentage: float
    message: str | None = None


@attrs.frozen(kw_only=True)
class ProgressEvent:
    """An event on the bus. Published by the same Lua script that performs the transition."""

    id: str
    type: EventType
    task_id: str = ""
    worker_id: str = ""
    status: TaskStatus | None = None
    attempt: int | None = None
    progress: ProgressInfo | None = None
    completion: TaskResult | None = None
    timestamp: datetime | None = None


@attrs.frozen(kw_only=True)
class WorkerCapabilities:
    max_concurrent_tasks: int = 1
    supported_task_types: tuple[str, ...] = TaskType.BUILTIN
    max_task_duration: int = 3_600_000


@attrs.frozen(kw_only=True)
class HeartbeatInfo:
    last_seen: datetime | None = None
    interval: float = 10.0
    missed_beats: int = 0


@attrs.frozen(kw_only=True)
class CurrentTask:
    task_id: str
    started_at: datetime | None = None
    last_progress: float = 0.0
    last_progress_update: datetime | None = None


@attrs.frozen(kw_only=True)
class WorkerStats:
    tasks_completed: int = 0
    tasks_failed: int = 0
    avg_duration: float = 0.0
    total_duration: float = 0.0


@attrs.frozen(kw_only=True)
class WorkerRegistration:
    """A worker as the registry knows it (seed data model, plus name, host and pid)."""

    id: str = attrs.field(factory=new_id)
    name: str = ""
    host: str = ""
    pid: int = 0
    session_id: str = ""
    status: WorkerStatus = WorkerStatus.IDLE
    capabilities: WorkerCapabilities = WorkerCapabilities()
    heartbeat: HeartbeatInfo = HeartbeatInfo()
    current_task: CurrentTask | None = None
    stats: WorkerStats = WorkerStats()
    registered_at: datetime | None = None
    last_activity_at: datetime | None = None
    #: Agents this worker stopped claiming tasks for, with the reason (a missing CLI, refused
    #: credentials). Claims leave those tasks to other workers.
    refused_agents: dict[str, str] = attrs.field(factory=dict)
    #: Installed executors this worker is not allowed to run (``shim worker --allow``), and the
    #: task types whose tasks run on one of them when they name no executor. Claims leave those
    #: tasks to other workers.
    denied_executors: tuple[str, ...] = ()
    denied_types: tuple[str, ...] = ()
