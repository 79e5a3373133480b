"""The contracts plugins implement: Executor, Decomposer, CheckpointBackend, ExecutionContext.

They are Protocols: a plugin satisfies them structurally and never has to import a base class.
The hooks that hand them to SHIM are in :mod:`shim_core.hookspecs`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from shim_core.models import Task, TaskResult


@attrs.frozen(kw_only=True)
class Checkpoint:
    """A snapshot of a task's progress that a later attempt resumes from."""

    id: str
    task_id: str
    session_id: str = ""
    attempt: int = 0
    progress: float = 0.0
    state: dict[str, Any] = attrs.field(factory=dict)
    created_at_ms: int = 0


@runtime_checkable
class ExecutionContext(Protocol):
    """What an executor gets besides the task (built by the worker for each execution)."""

    task: Task
    worker_id: str
    #: Set when the task is cancelled, its lease is lost, it exceeds its time limit, or the
    #: worker shuts down. Long work checks it (or waits on it) and returns early.
    cancelled: threading.Event
    #: State of the latest checkpoint of an earlier attempt, or None on a fresh start.
    resume_state: dict[str, Any] | None
    #: Results of the task's dependencies, by task id (context flowing down the DAG).
    dependency_results: Mapping[str, TaskResult]
    #: Where the task works: its ``context.project_path``, else a private temporary directory.
    workdir: Path
    #: Logger whose records also go to the task's log in Redis.
    log: logging.Logger

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1] (also extends the lease)."""

    def checkpoint(self, state: dict[str, Any], progress: float | None = None) -> str:
        """Save ``state`` (JSON-able) for a later attempt to resume from; returns its id."""


@runtime_checkable
class Executor(Protocol):
    """Runs tasks. ``task_types`` are the types it runs when a task names no executor (empty:
    only tasks that name it). Raising an exception fails the attempt (retried while attempts
    are left); returning ``TaskResult(success=False)`` does the same without a traceback."""

    @property
    def name(self) -> str: ...

    @property
    def task_types(self) -> tuple[str, ...]: ...

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult: ...


@runtime_checkable
class CheckpointBackend(Protocol):
    """Stores checkpoints. Lease checks happen before ``save`` is called (in CheckpointStore)."""

    @property
    def name(self) -> str: ...

    def save(self, checkpoint: Checkpoint) -> str: ...

    def latest(self, task_id: str) -> Checkpoint | None: ...

    def for_session(self, session_id: str) -> list[Checkpoint]: ...

    def delete(self, task_id: str) -> int: ...


@runtime_checkable
class CheckpointBackendFactory(Protocol):
    """Builds a backend for one namespace: ``factory.create(connection, settings)``."""

    @property
    def name(self) -> str: ...

    def create(self, connection: Any, settings: Any) -> CheckpointBackend: ...


@runtime_checkable
class Decomposer(Protocol):
    """Turns a request (a plan file path or free text) into a plan of tasks."""

    @property
    def name(self) -> str: ...

    def decompose(self, request: str, context: Mapping[str, Any]) -> Any: ...
