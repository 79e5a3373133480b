"""The contracts plugins implement: Executor, Decomposer, CheckpointBackend, AgentAdapter, and
what they are handed (ExecutionContext, AgentInvocation).

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

from shim_core.models import Task, TaskOutcome, TaskResult


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

    @property
    def cancelled(self) -> threading.Event:
        """Set when the task is cancelled, its lease is lost, it exceeds its time limit, or the
        worker shuts down. Long work checks it (or waits on it) and returns early."""

    #: State of the latest checkpoint of an earlier attempt, or None on a fresh start.
    resume_state: dict[str, Any] | None
    #: Results of the task's dependencies, by task id (context flowing down the DAG).
    dependency_results: Mapping[str, TaskResult]

    @property
    def workdir(self) -> Path:
        """Where the task works: its ``context.project_path``, else a private temporary
        directory (made on first use, removed after the execution)."""

    @property
    def log(self) -> logging.Logger:
        """Logger whose records also go to the task's log in Redis."""

    #: The coding-agent adapters installed on this worker, by name (for the ``agent`` executor).
    agent_adapters: Mapping[str, AgentAdapter]

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1] (also extends the lease)."""

    def checkpoint(self, state: dict[str, Any], progress: float | None = None) -> str:
        """Save ``state`` (JSON-able) for a later attempt to resume from; returns its id."""


@runtime_checkable
class Executor(Protocol):
    """Runs tasks. ``task_types`` are the types it runs when a task names no executor (empty:
    only tasks that name it). Raising an exception fails the attempt (retried while attempts
    are left); returning ``TaskResult(success=False)`` does the same without a traceback.

    An executor may also set ``runs_code = False`` (a class attribute) when nothing in a task
    can make it run code or touch the machine (a simulation). Every other executor runs only on
    workers started with ``--allow <its name>``: whoever can write to Redis decides what such an
    executor does (see :func:`runs_code`)."""

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


@attrs.frozen(kw_only=True)
class AgentInvocation:
    """One run of a coding-agent CLI, as the ``agent`` executor asks an adapter to start it."""

    prompt: str
    #: The prompt also written to a file (for CLIs that take one), inside ``workdir``'s parent.
    prompt_file: Path
    workdir: Path
    model: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    #: A session to resume (the CLI's own id), or None for a fresh one.
    resume_session: str | None = None
    extra_args: tuple[str, ...] = ()
    #: The adapter's own options from the task's params (e.g. ``argv`` of the generic adapter).
    options: Mapping[str, Any] = attrs.field(factory=dict)
    #: The agent may read but must not change anything (planning a request, for instance).
    read_only: bool = False


@attrs.define
class AgentState:
    """What an adapter has read from a CLI's output so far; the ``agent`` executor turns it into
    progress, a checkpoint of the session id, and the task's result."""

    session_id: str = ""
    #: The last assistant text (the final answer once the run ends).
    summary: str = ""
    turns: int = 0
    tool_calls: int = 0
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: True once the CLI reported its final result.
    final: bool = False
    #: The outcome the output itself says (an error result, a rate limit, refused credentials);
    #: None: decided from ``final`` and the exit status.
    outcome: TaskOutcome | None = None
    error: str = ""
    #: When a rate limit resets (epoch ms), if the CLI said so.
    rate_limit_reset_ms: int | None = None
    #: Lines the adapter did not recognise (kept in the task log, never fatal).
    unknown_lines: int = 0
    #: The kind of the previous event, for adapters whose events continue one another.
    last_event: str = ""
    #: The invocation's adapter options (``AgentInvocation.options``).
    options: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class AgentAdapter(Protocol):
    """Runs one coding-agent CLI headless and reads its output (``params.agent`` names it).

    ``feed`` gets every output line (stdout and stderr, in order) and updates the state; it
    returns a short progress message worth showing, or None. It must never raise on a line it
    does not understand (these CLIs change weekly): count it in ``state.unknown_lines``."""

    @property
    def name(self) -> str: ...

    @property
    def command(self) -> str:
        """The binary looked up on PATH unless the task's ``params.command`` names another."""

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]: ...

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        """Variables added to the worker's environment for this run."""

    def feed(self, line: str, state: AgentState) -> str | None: ...

    def finish(self, exit_code: int, state: AgentState) -> None:
        """Called once the CLI exited, to settle what its output left open (a plain-text CLI
        has no final event: its exit status says whether it finished).

        An adapter whose CLI reports a resumed session's cost including the earlier runs sets
        an attribute ``cumulative_cost = True``: the executor then charges only the difference.
        """


def runs_code(executor: Executor) -> bool:
    """Whether tasks decide what ``executor`` runs on the worker's machine: true unless it says
    ``runs_code = False``, so an executor that does not know is opt-in (``--allow``)."""
    return getattr(executor, "runs_code", True) is not False
