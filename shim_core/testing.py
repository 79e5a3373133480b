"""Test doubles for executor authors: run an executor without Redis or a worker.

::

    from shim_core import Task
    from shim_core.testing import RecordingContext

    def test_my_executor():
        task = Task(executor="mine", params={"n": 3})
        with RecordingContext(task=task) as ctx:
            result = MyExecutor().execute(task, ctx)
        assert result.success
        assert ctx.progress_calls[-1] == (1.0, "done")
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from shim_core import serde
from shim_core.contracts import AgentAdapter, Checkpoint
from shim_core.models import Task, TaskResult, new_id

_WORKDIR_PREFIX = "shim-recording-"
#: Working directories this module created (and so may delete).
_OWNED_WORKDIRS: set[Path] = set()


def _fresh_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
    _OWNED_WORKDIRS.add(path)
    return path


def _remove_workdir(path: Path) -> None:
    _OWNED_WORKDIRS.discard(path)
    shutil.rmtree(path, ignore_errors=True)


class _ListHandler(logging.Handler):
    """Appends the message of every record to a list."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def _task_logger(task_id: str, sink: list[str]) -> logging.Logger:
    # A logger of this context alone (not in logging's registry), so two contexts for the same
    # task id never see each other's records; it still propagates to "shim.task" and the root.
    logger = logging.Logger(f"shim.task.{task_id}", logging.DEBUG)
    logger.parent = logging.getLogger("shim.task")
    logger.addHandler(_ListHandler(sink))
    return logger


@attrs.define
class RecordingContext:
    """An :class:`~shim_core.contracts.ExecutionContext` that records instead of reporting.

    ``progress`` calls land in :attr:`progress_calls`, checkpoints in :attr:`checkpoints` (as
    :class:`~shim_core.contracts.Checkpoint` values whose state went through JSON, as it would on
    its way to a backend), and log messages in :attr:`logs`. Set :attr:`cancelled` to simulate a
    cancellation, a lost lease or a shutdown. Without ``workdir`` it creates a temporary
    directory, removed by :meth:`close` (or leaving a ``with`` block, or garbage collection).
    Safe to use from several threads.
    """

    task: Task = attrs.field(factory=Task)
    worker_id: str = "test-worker"
    cancelled: threading.Event = attrs.field(factory=threading.Event)
    resume_state: dict[str, Any] | None = None
    dependency_results: Mapping[str, TaskResult] = attrs.field(factory=dict)
    workdir: Path = attrs.field(factory=_fresh_workdir, converter=Path)
    #: Agent adapters the ``agent`` executor may use, by name.
    agent_adapters: Mapping[str, AgentAdapter] = attrs.field(factory=dict)
    #: Every ``progress(fraction, message)`` call, in order.
    progress_calls: list[tuple[float, str]] = attrs.field(factory=list, init=False)
    #: Every checkpoint saved, oldest first.
    checkpoints: list[Checkpoint] = attrs.field(factory=list, init=False)
    #: The message of every record logged through :attr:`log`, in order.
    logs: list[str] = attrs.field(factory=list, init=False)
    log: logging.Logger = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _cleanup: weakref.finalize[Any, Any] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.log = _task_logger(self.task.id, self.logs)
        if self.workdir in _OWNED_WORKDIRS:
            self._cleanup = weakref.finalize(self, _remove_workdir, self.workdir)

    def progress(self, fraction: float, message: str = "") -> None:
        """Record a progress report; raises ValueError outside [0, 1] as the queue does."""
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"progress must be between 0 and 1, got {fraction!r}")
        with self._lock:
            self.progress_calls.append((float(fraction), message))

    def checkpoint(self, state: dict[str, Any], progress: float | None = None) -> str:
        """Record a checkpoint of ``state`` (which must be JSON-able); returns its id."""
        copied = json.loads(serde.dumps(state))
        with self._lock:
            fraction = self.progress_calls[-1][0] if self.progress_calls else 0.0
            saved = Checkpoint(
                id=new_id(),
                task_id=self.task.id,
                session_id=self.task.context.session_id,
                attempt=self.task.attempts,
                progress=fraction if progress is None else progress,
                state=copied,
                created_at_ms=int(time.time() * 1000),
            )
            self.checkpoints.append(saved)
        return saved.id

    @property
    def checkpoint_states(self) -> list[dict[str, Any]]:
        """The state of every recorded checkpoint, oldest first."""
        return [c.state for c in self.checkpoints]

    @property
    def fractions(self) -> list[float]:
        """The fraction of every recorded progress call, in order."""
        return [fraction for fraction, _ in self.progress_calls]

    def close(self) -> None:
        """Delete the working directory if this context created it."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> RecordingContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
