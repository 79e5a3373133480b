"""The ``python`` executor: calls ``package.module:callable`` with ``(task, ctx)``.

Params: ``function`` — a reference ``"package.module:name"`` (``name`` may be dotted, e.g.
``"module:Class.method"``). The callable's TaskResult is returned as it is; any other return
value becomes ``TaskResult(success=True, output=value)`` and must be JSON-able. A reference that
cannot be resolved gives a failed result with a clear error; an exception raised by the callable
itself fails the attempt like any executor exception.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from shim_core import serde
from shim_core.contracts import ExecutionContext
from shim_core.models import Task, TaskResult


class BadReference(ValueError):
    """A ``function`` param that does not name an importable callable."""


def resolve(reference: object) -> Callable[..., Any]:
    """The callable named by ``"package.module:name"``; raises BadReference. Found callables
    are remembered (a worker resolves the same few references for every task)."""
    if isinstance(reference, str):
        known = _RESOLVED.get(reference)
        if known is not None:
            return known
    found = _resolve(reference)
    if len(_RESOLVED) < _RESOLVED_KEPT:
        _RESOLVED[str(reference)] = found
    return found


#: Return values that are JSON as they are (the common case skips the encoding check).
_PLAIN = frozenset({int, float, str, bool, type(None)})
#: Callables found, by reference (bounded: references come from task params).
_RESOLVED: dict[str, Callable[..., Any]] = {}
_RESOLVED_KEPT = 1024


def _resolve(reference: object) -> Callable[..., Any]:
    usage = f"param 'function' must be 'package.module:callable', got {reference!r}"
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise BadReference(usage)
    module_name, _, path = (part.strip() for part in reference.partition(":"))
    if not module_name or not path:
        raise BadReference(usage)
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise BadReference(f"no module named {exc.name!r} (from {reference!r})") from None
        raise BadReference(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the module itself is broken: still a configuration problem
        raise BadReference(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for attribute in path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise BadReference(f"{reference!r}: {attribute!r} not found") from None
    if not callable(target):
        raise BadReference(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


@attrs.define
class PythonExecutor:
    """Runs a Python callable named by ``params["function"]``."""

    name: str = "python"
    task_types: tuple[str, ...] = ()

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult:
        """Call the referenced function with ``(task, ctx)`` and wrap what it returns."""
        reference = task.params.get("function")
        try:
            function = resolve(reference)
        except BadReference as exc:
            ctx.log.error("%s", exc)
            return TaskResult(success=False, error=str(exc))
        value = function(task, ctx)
        if isinstance(value, TaskResult):
            return value
        if type(value) in _PLAIN:
            return TaskResult(success=True, output=value)
        try:
            serde.dumps(value)
        except (TypeError, ValueError) as exc:
            return TaskResult(
                success=False, error=f"{reference} returned a value that is not JSON: {exc}"
            )
        return TaskResult(success=True, output=value)
