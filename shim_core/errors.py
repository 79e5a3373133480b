"""The one exception tree of SHIM.

::

    ShimError
    ├── ConfigError               bad settings, URL or argument
    ├── ConnectionFailed          Redis unreachable after retries (URL shown with password masked)
    │   ├── AuthenticationFailed  wrong or missing password, disabled user (never retried)
    │   └── TLSFailed             certificate not verified, client certificate wanted, TLS/plain
    │                             mismatch (never retried)
    ├── PermissionDenied          the Redis user lacks ACL permissions SHIM needs (``missing``)
    ├── ValidationError           input refused before anything was written
    │   ├── DuplicateTask         a task id already exists (or twice in one batch)
    │   ├── MissingDependency     a dependency names no known task
    │   ├── DependencyCycle       the dependencies form a cycle (``cycle`` lists it)
    │   └── PayloadTooLarge       a task is bigger than ``max_payload_bytes``
    └── TaskError                 an operation on one task failed (``task_id``)
        ├── TaskNotFound          no such task
        ├── CorruptTask           the stored hash does not decode to a Task
        ├── StaleLease            the caller's lease token is not the current one (fencing)
        └── InvalidTransition     the task is not in a state that allows the operation

Lua scripts report domain failures as small negative integers; :func:`raise_for_code` turns them
into the exceptions above, so every caller sees the same typed errors.
"""

from __future__ import annotations

import enum


class ShimError(Exception):
    """Base class of every error SHIM raises on purpose."""


class ConfigError(ShimError, ValueError):
    """A setting, URL or argument is invalid."""


class ConnectionFailed(ShimError, ConnectionError):
    """Redis could not be reached (after the configured retries)."""


class ValidationError(ShimError, ValueError):
    """Input refused before anything was written to Redis."""


class DuplicateTask(ValidationError):
    """A task id is already taken."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} already exists")
        self.task_id = task_id


class MissingDependency(ValidationError):
    """A task depends on a task that does not exist."""

    def __init__(self, task_id: str, dependency: str) -> None:
        super().__init__(f"task {task_id!r} depends on unknown task {dependency!r}")
        self.task_id = task_id
        self.dependency = dependency


class DependencyCycle(ValidationError):
    """The dependencies of a batch form a cycle."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class PayloadTooLarge(ValidationError):
    """A task serialises to more bytes than allowed."""

    def __init__(self, task_id: str, size: int, limit: int) -> None:
        super().__init__(f"task {task_id!r} is {size} bytes, over the {limit}-byte limit")
        self.task_id = task_id
        self.size = size
        self.limit = limit


class TaskError(ShimError):
    """An operation on one task failed."""

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskNotFound(TaskError, KeyError):
    """No task with this id exists in the namespace."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, f"task {task_id!r} not found")

    def __str__(self) -> str:  # KeyError would quote the message again
        return str(self.args[0])


class CorruptTask(TaskError):
    """A stored task hash could not be decoded."""


class StaleLease(TaskError):
    """The lease token is not the task's current one: another claim superseded it."""

    def __init__(self, task_id: str, token: int) -> None:
        super().__init__(task_id, f"lease {token} on task {task_id!r} is stale")
        self.token = token


class InvalidTransition(TaskError):
    """The task's state does not allow the requested operation; ``status`` is the state it is
    in, when the script said (``cancelled``, ``complete``, ...)."""

    def __init__(self, task_id: str, message: str, status: str = "") -> None:
        super().__init__(task_id, message)
        self.status = status


class ErrorCode(enum.IntEnum):
    """Domain failure codes returned by the Lua scripts."""

    NOT_FOUND = -1
    STALE_LEASE = -2
    WRONG_STATE = -3
    DUPLICATE = -4
    MISSING_DEPENDENCY = -5
    #: A heartbeat of a worker the registry declared crashed (or saw leave).
    WORKER_GONE = -6


def raise_for_code(code: int, task_id: str, *, token: int = 0, detail: str = "") -> None:
    """Raise the exception for a negative script result; do nothing for success codes."""
    if code >= 0:
        return
    match ErrorCode(code):
        case ErrorCode.NOT_FOUND:
            raise TaskNotFound(task_id)
        case ErrorCode.STALE_LEASE:
            raise StaleLease(task_id, token)
        case ErrorCode.WRONG_STATE:
            raise InvalidTransition(
                task_id, f"task {task_id!r} is {detail or 'in another state'}", detail
            )
        case ErrorCode.DUPLICATE:
            raise DuplicateTask(task_id)
        case ErrorCode.MISSING_DEPENDENCY:
            raise MissingDependency(task_id, detail)


class AuthenticationFailed(ConnectionFailed):
    """Redis refused the credentials: a wrong password, no password where one is needed, or a
    disabled user. Never retried: asking again gets the same answer."""


class TLSFailed(ConnectionFailed):
    """The TLS layer failed: the server's certificate did not verify, the server wants a client
    certificate, or one side speaks TLS and the other does not. Never retried."""


class PermissionDenied(ShimError):
    """The Redis user lacks ACL permissions SHIM needs (``missing`` lists each refused command
    with the server's reason)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


class InsecureTLSWarning(UserWarning):
    """TLS runs without verifying the server's certificate (``SHIM_TLS_INSECURE``)."""
