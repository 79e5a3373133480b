"""The ExecutionContext a worker hands to an executor for one execution of one task."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shim_core.checkpoints import CheckpointStore
from shim_core.contracts import AgentAdapter
from shim_core.errors import TaskError, ValidationError
from shim_core.models import Claim, Task, TaskResult
from shim_core.queue import TaskQueue

#: Log lines kept per task in Redis.
LOG_LINES_KEPT = 1000
#: Log lines buffered before one pipelined write.
LOG_FLUSH_LINES = 50
#: Longer log lines are cut (a tool printing a whole file in one line must not fill Redis).
MAX_LOG_LINE_CHARS = 8_192
#: Longer progress messages are cut: each is stored with the task and published.
MAX_PROGRESS_MESSAGE_CHARS = 1_000


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class TaskLogHandler(logging.Handler):
    """Sends a task's log records to its capped Redis list, buffered into pipelined writes."""

    def __init__(self, queue: TaskQueue, task_id: str) -> None:
        super().__init__()
        self._queue = queue
        self._task_id = task_id
        self._buffer: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self._buffer.append(clip(self.format(record), MAX_LOG_LINE_CHARS))
        if len(self._buffer) >= LOG_FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        lines, self._buffer = self._buffer, []
        if not lines:
            return
        try:
            self._queue.append_log(self._task_id, lines, LOG_LINES_KEPT)
        except Exception:  # the log is best effort; the task result is what matters
            logging.getLogger(__name__).warning("could not store %d log line(s)", len(lines))


#: Held while an execution's ``cancelled`` event is made (on first use, from any thread).
_MAKING_EVENTS = threading.Lock()

#: Parent of every task's logger: records also reach the worker's own log through it.
TASK_LOGGER = logging.getLogger("shim.task")


def task_logger(task_id: str, handler: logging.Handler) -> logging.Logger:
    """A logger for one execution, outside the logging registry: ``logging.getLogger`` would
    keep one logger per task for ever, and each ``setLevel`` walks every logger ever made (a
    worker slowed to a fifth over 30,000 tasks). It dies with the execution."""
    log = logging.Logger(f"shim.task.{task_id}", logging.INFO)
    log.parent = TASK_LOGGER
    log.addHandler(handler)
    return log


class TaskExecution:
    """One execution: the lease, the cancellation flag and the helpers an executor calls.

    Satisfies :class:`shim_core.contracts.ExecutionContext`.
    """

    def __init__(
        self,
        claim: Claim,
        queue: TaskQueue,
        checkpoints: CheckpointStore | None,
        *,
        worker_id: str,
        resume_state: dict[str, Any] | None = None,
        dependency_results: Mapping[str, TaskResult] | None = None,
        agent_adapters: Mapping[str, AgentAdapter] | None = None,
    ) -> None:
        self.claim = claim
        self.task: Task = claim.task
        self.token = claim.token
        self.worker_id = worker_id
        self._cancelled: threading.Event | None = None
        self.cancel_reason = ""
        self.resume_state = resume_state
        self.dependency_results: Mapping[str, TaskResult] = dependency_results or {}
        self.agent_adapters: Mapping[str, AgentAdapter] = agent_adapters or {}
        self._queue = queue
        self._checkpoints = checkpoints
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir: Path | None = None
        self._handler: TaskLogHandler | None = None
        self._log: logging.Logger | None = None

    @property
    def log(self) -> logging.Logger:
        """The task's logger, made on first use (most tasks never log: no handler, lock or
        formatter is built for them)."""
        if self._log is None:
            self._handler = TaskLogHandler(self._queue, self.task.id)
            self._log = task_logger(self.task.id, self._handler)
        return self._log

    @property
    def cancelled(self) -> threading.Event:
        """Set when the execution is asked to stop. Made on first use: most executions are
        never cancelled and their executor never looks (an Event is a lock and a condition)."""
        event = self._cancelled
        if event is None:
            with _MAKING_EVENTS:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def cancel(self, reason: str) -> None:
        """Ask the executor to stop (first reason wins)."""
        event = self.cancelled
        with _MAKING_EVENTS:  # two threads cancelling at once: the first reason stays
            if not event.is_set():
                self.cancel_reason = reason
                event.set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress; a refused report (lease lost, task cancelled) cancels the execution."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if message:
            message = clip(message, MAX_PROGRESS_MESSAGE_CHARS)
        try:
            self._queue.progress(self.task.id, self.token, fraction, message)
        except TaskError as exc:
            self.cancel(f"lease lost: {exc}")

    def checkpoint(self, state: dict[str, Any], progress: float | None = None) -> str:
        """Save a checkpoint the next attempt resumes from; returns its id ('' if refused)."""
        if self._checkpoints is None:
            return ""
        try:
            return self._checkpoints.save(
                self.task.id,
                self.token,
                state,
                progress=progress or 0.0,
                attempt=self.task.attempts,
                session_id=self.task.context.session_id,
            )
        except TaskError as exc:
            self.cancel(f"lease lost: {exc}")
            return ""
        except ValidationError as exc:  # too large: the task goes on, without this checkpoint
            self.log.error("checkpoint not saved: %s", exc)
            return ""

    @property
    def workdir(self) -> Path:
        """The task's ``context.project_path``, else a private temporary directory made on
        first use (most executors never ask: no directory is made for them)."""
        if self._workdir is None:
            if self.task.context.project_path:
                self._workdir = Path(self.task.context.project_path)
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix=f"shim-{self.task.id[:40]}-")
                self._workdir = Path(self._tmp.name)
        return self._workdir

    def close(self) -> None:
        """Flush the task log and remove the private work directory, if any."""
        if self._log is not None and self._handler is not None:
            self._handler.flush()
            self._log.removeHandler(self._handler)
        if self._tmp is not None:
            self._tmp.cleanup()
