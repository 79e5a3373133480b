"""Which executors a worker may run: ``shim worker --allow``.

Whoever can write to Redis decides what a task asks for, so executors that run code (``shell``,
``python``, ``agent`` and every third-party executor that does not say ``runs_code = False``) are
opt-in per worker. A worker never claims a task whose executor it may not run: its registry
hash lists them (``deny``), and the claim scripts leave those tasks to other workers. The
executor checks again before it runs a task, whatever the hash says.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import attrs

from shim_core.contracts import runs_code
from shim_core.errors import ShimError
from shim_core.keys import check_name
from shim_core.models import Task, TaskType
from shim_core.plugins import Plugins

#: ``--allow all``: every installed executor.
ALL = "all"


@attrs.frozen
class ExecutorPolicy:
    """The installed executors a worker runs and those it leaves to others."""

    allowed: frozenset[str]
    denied: frozenset[str]
    #: The task types whose tasks run on a denied executor when they name none (an executor
    #: that declares the type, else the worker's default executor).
    denied_types: tuple[str, ...] = ()
    #: The worker's types that are neither built in nor declared by an installed executor: a plan
    #: cannot use them (tasks added through the Python API can).
    unknown_types: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        plugins: Plugins,
        allow: Collection[str],
        *,
        types: Sequence[str] = (),
        default_executor: str | None = None,
    ) -> ExecutorPolicy:
        """The policy of a worker with ``allow`` (executor names, or ``all``). Raises ShimError
        for a name no installed executor has, and for a default executor that is not allowed
        (every task it would run would be left)."""
        installed = plugins.executors
        for task_type in types:
            check_name("task type", task_type)
        if default_executor is not None and default_executor not in installed:
            raise ShimError(
                f"--default-executor names no installed executor: {default_executor!r} "
                f"(installed: {', '.join(sorted(installed))})"
            )
        unknown = sorted(set(allow) - set(installed) - {ALL})
        if unknown:
            raise ShimError(
                f"--allow names no installed executor: {', '.join(unknown)} "
                f"(installed: {', '.join(sorted(installed))}, or 'all')"
            )
        allowed = frozenset(
            name
            for name, executor in installed.items()
            if ALL in allow or name in allow or not runs_code(executor)
        )
        denied = frozenset(installed) - allowed
        if default_executor in denied:
            raise ShimError(
                f"the default executor {default_executor!r} runs what each task says: "
                f"allow it with --allow {default_executor}"
            )
        # A task that names no executor runs on the one its type resolves to: the worker's
        # types, and every type a denied executor declares (a task targeted at this worker
        # may have any type).
        declared = [t for name in sorted(denied) for t in installed[name].task_types]
        denied_types = tuple(
            t
            for t in dict.fromkeys([*types, *declared])
            if (found := plugins.executor_for(Task(id="policy", type=t), default_executor))
            is not None
            and found.name in denied
        )
        known = {*TaskType.BUILTIN, *(t for ex in installed.values() for t in ex.task_types)}
        unknown_types = tuple(t for t in types if t not in known)
        return cls(allowed, denied, denied_types, unknown_types)

    def refusal(self, executor: str) -> str | None:
        """Why this worker may not run ``executor`` (None: it may)."""
        if executor not in self.denied:
            return None
        return (
            f"executor {executor!r} is not allowed on this worker "
            f"(start the worker with --allow {executor})"
        )
