"""Loading plugins: SHIM's built-ins and third-party packages, all through the ``shim`` entry
points and the hooks of :mod:`shim_core.hookspecs`.

A plugin that fails to import, raises from a hook or returns something that is not an executor /
strategy / backend is reported by name in :attr:`Plugins.errors` and skipped; it never takes the
process down. Environment switches (as in datasette and tox):

* ``SHIM_LOAD_PLUGINS=a,b`` — load only these entry points (empty: none at all)
* ``SHIM_DISABLE_PLUGINS=a,b`` — skip these entry points
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import attrs
import pluggy

from shim_core import hookspecs
from shim_core.contracts import AgentAdapter, CheckpointBackendFactory, Decomposer, Executor
from shim_core.models import Task

log = logging.getLogger(__name__)
GROUP = "shim"


@attrs.frozen
class PluginError:
    plugin: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.error}"


@attrs.frozen
class Provided:
    """One executor, strategy or backend and the package that provides it."""

    kind: str
    name: str
    plugin: str
    package: str


class Plugins:
    """The executors, decomposition strategies and checkpoint backends available here."""

    def __init__(
        self,
        *,
        entry_points: bool = True,
        extra: Iterable[object] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.errors: list[PluginError] = []
        self._packages: dict[str, str] = {}
        if entry_points:
            self._load_entry_points(os.environ if env is None else env)
        self._load_errors = list(self.errors)
        for plugin in extra:
            self.register(plugin)
        self.executors: dict[str, Executor] = {}
        self.decomposers: dict[str, Decomposer] = {}
        self.backends: dict[str, CheckpointBackendFactory] = {}
        self.adapters: dict[str, AgentAdapter] = {}
        self.provided: list[Provided] = []
        self.refresh()

    def register(self, plugin: object, name: str | None = None, package: str = "") -> None:
        """Register a plugin object or module by hand (tests, embedding applications)."""
        registered = self.manager.register(plugin, name=name)
        if registered:
            self._packages[registered] = package or getattr(plugin, "__name__", registered)

    def refresh(self) -> None:
        """Collect what every registered plugin provides (again)."""
        self.provided.clear()
        self.errors = list(self._load_errors)
        hook = self.manager.hook
        self.executors = self._collect("executor", hook.shim_executors, Executor)
        self.decomposers = self._collect("strategy", hook.shim_decomposers, Decomposer)
        self.backends = self._collect(
            "checkpoint backend", hook.shim_checkpoint_backends, CheckpointBackendFactory
        )
        self.adapters = self._collect("agent adapter", hook.shim_agent_adapters, AgentAdapter)

    def executor_for(self, task: Task, default: str | None = None) -> Executor | None:
        """The executor a task names, else the first one that claims its type, else ``default``."""
        if task.executor:
            return self.executors.get(task.executor)
        for executor in self.executors.values():
            if task.type in executor.task_types:
                return executor
        return self.executors.get(default) if default else None

    def _load_entry_points(self, env: Mapping[str, str]) -> None:
        only = env.get("SHIM_LOAD_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        disabled = {n.strip() for n in env.get("SHIM_DISABLE_PLUGINS", "").split(",")}
        for ep in entry_points(group=GROUP):
            if ep.name in disabled or (allowed is not None and ep.name not in allowed):
                continue
            try:
                module = ep.load()
                self.manager.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin is reported, never fatal
                self._fail(ep.name, f"cannot be loaded: {type(exc).__name__}: {exc}")
                continue
            self._packages[ep.name] = ep.dist.name if ep.dist else ep.value

    def _collect(self, kind: str, caller: Any, protocol: Any) -> dict[str, Any]:
        # protocol: a runtime-checkable Protocol (mypy refuses abstract types as type[T])
        found: dict[str, Any] = {}
        for impl in caller.get_hookimpls():  # registration order: the first provider of a name wins
            try:
                items = list(impl.function())
            except Exception as exc:
                self._fail(impl.plugin_name, f"{kind} hook raised {type(exc).__name__}: {exc}")
                continue
            for item in items:
                name = getattr(item, "name", None)
                if not isinstance(item, protocol) or not isinstance(name, str) or not name:
                    self._fail(impl.plugin_name, f"returned {item!r}, which is not a {kind}")
                elif name in found:
                    self._fail(impl.plugin_name, f"{kind} {name!r} is already provided")
                else:
                    found[name] = item
                    package = self._packages.get(impl.plugin_name, impl.plugin_name)
                    self.provided.append(Provided(kind, name, impl.plugin_name, package))
        return found

    def _fail(self, plugin: str, error: str) -> None:
        problem = PluginError(plugin, error)
        self.errors.append(problem)
        log.warning("%s; skipped", problem)
