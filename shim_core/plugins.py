"""Loading plugins: SHIM's built-ins and third-party packages, all through the ``shim`` entry
points and the hooks of :mod:`shim_core.hookspecs`.

A plugin that fails to import, raises from a hook or returns something that is not an executor /
strategy / backend is reported by name in :attr:`Plugins.errors` and skipped; it never takes the
process down. Environment switches (as in datasette and tox):

* ``SHIM_LOAD_PLUGINS=a,b`` — load only these entry points (empty: none at all)
* ``SHIM_DISABLE_PLUGINS=a,b`` — skip these entry points
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from importlib.machinery import PathFinder
from typing import Any, Protocol

import attrs
import pluggy

from shim_core import hookspecs
from shim_core.contracts import AgentAdapter, CheckpointBackendFactory, Decomposer, Executor
from shim_core.models import Task

log = logging.getLogger(__name__)
GROUP = "shim"


class EntryPoint(Protocol):
    """An entry point as plugins are loaded from: importlib.metadata's, or one of
    :func:`entry_points`' own."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def dist(self) -> Any:
        """The distribution it comes from (only its ``name`` is read), or None."""

    def load(self) -> Any: ...


def entry_points(*, group: str) -> list[EntryPoint]:
    """The entry points of ``group``: those ``importlib.metadata.entry_points(group=group)``
    gives, in the same order.

    When the installed distributions are all ``*.dist-info`` / ``*.egg-info`` directories in
    the directories of ``sys.path`` (a virtual environment, a system or user site-packages),
    their ``entry_points.txt`` files are read here: importlib.metadata imports the ``email``
    package and zipfile to offer more, about 4 % of a worker's start. Anything else (a zip file
    or an egg on the path, a finder of its own that lists distributions) is left to
    importlib.metadata itself.
    """
    found = _scan_entry_points(group)
    if found is None:
        from importlib import metadata

        return list(metadata.entry_points(group=group))
    return found


#: What importlib.metadata's ``EntryPoint.load`` accepts: ``module[:attr.path] [extras]``.
_ENTRY_POINT_VALUE = re.compile(
    r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$"
)
_INFO_SUFFIXES = (".dist-info", ".egg-info")


class _Distribution:
    """A distribution directory found on ``sys.path``; its name is read from its metadata when
    asked (importing importlib.metadata then)."""

    __slots__ = ("_name", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._name: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            from importlib.metadata import Distribution

            self._name = str(Distribution.at(self.path).name)
        return self._name


class _EntryPoint:
    """An entry point read from an ``entry_points.txt`` (see :func:`entry_points`)."""

    __slots__ = ("dist", "group", "name", "value")

    def __init__(self, name: str, value: str, group: str, dist: _Distribution) -> None:
        self.name, self.value, self.group, self.dist = name, value, group, dist

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"

    def load(self) -> Any:
        """The object the entry point names, as importlib.metadata's ``EntryPoint.load``."""
        match = _ENTRY_POINT_VALUE.match(self.value)
        if match is None:
            raise ValueError(f"malformed entry point {self.value!r}")
        module = importlib.import_module(match["module"])
        return functools.reduce(getattr, filter(None, (match["attr"] or "").split(".")), module)


def _scan_entry_points(group: str) -> list[EntryPoint] | None:
    """The entry points of ``group`` from the distribution directories on ``sys.path``, as
    importlib.metadata finds them (the first distribution of a name on the path wins); None
    when some distribution may be found only by importlib.metadata."""
    for finder in sys.meta_path:
        if finder is not PathFinder and hasattr(finder, "find_distributions"):
            return None
    found: list[EntryPoint] = []
    seen: set[str] = set()
    header = f"[{group}]"
    entries: list[object] = list(sys.path)
    for entry in entries:
        if not isinstance(entry, str):  # a path-like object someone put there
            return None
        root = entry or "."
        if root.lower().endswith(".egg") or (os.path.exists(root) and not os.path.isdir(root)):
            return None
        try:
            children = os.listdir(root)
        except OSError:
            continue
        for child in children:  # the first distribution of each name on the path
            if not child.lower().endswith(_INFO_SUFFIXES):
                continue
            key = re.sub(r"[-_.]+", "_", child.lower().rpartition(".")[0].partition("-")[0])
            if key in seen:
                continue
            seen.add(key)
            path = os.path.join(root, child)
            try:
                with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except (OSError, UnicodeDecodeError):
                continue
            if header in text:
                found.extend(_parse_entry_points(text, group, _Distribution(path)))
    return found


def _parse_entry_points(text: str, group: str, dist: _Distribution) -> list[EntryPoint]:
    """The ``name = value`` lines of section ``[group]`` of an ``entry_points.txt``."""
    found: list[EntryPoint] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group and "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            found.append(_EntryPoint(name, value, group, dist))
    return found


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


#: SHIM's own plugin modules that provide decomposition strategies only (``pyproject.toml``):
#: imported when strategies are first asked for, not by every process that loads plugins (a
#: worker never uses one, and they import the plan reader: about 3 % of its start).
STRATEGIES_ONLY = frozenset({"shim_plugins.decomposers.plugin"})
#: The kinds, in the order :attr:`Plugins.provided` lists them.
KINDS = ("executor", "strategy", "checkpoint backend", "agent adapter")


class Plugins:
    """The executors, decomposition strategies and checkpoint backends available here.

    :attr:`errors` holds every plugin that failed to load or whose hook failed; with SHIM's own
    strategies not imported yet (see :data:`STRATEGIES_ONLY`), those of the strategies are
    found when :attr:`decomposers` (or :attr:`provided`) is first read.
    """

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
        #: Plugin name -> the package it comes from, or the entry point it was loaded from: the
        #: package name is read from the installed metadata only when :attr:`provided` is (a
        #: worker never asks, and that read costs milliseconds).
        self._packages: dict[str, str | EntryPoint] = {}
        #: Plugin name -> its rank: entry points in the order found, then the plugins registered
        #: by hand. The first provider of a name wins, even over one loaded earlier.
        self._rank: dict[str, int] = {}
        #: Entry points of :data:`STRATEGIES_ONLY` not imported yet.
        self._deferred: list[EntryPoint] = []
        self._load_errors: list[PluginError] = []
        if entry_points:
            self._load_entry_points(os.environ if env is None else env)
        for plugin in extra:
            self.register(plugin)
        self.executors: dict[str, Executor] = {}
        self._decomposers: dict[str, Decomposer] | None = None
        self.backends: dict[str, CheckpointBackendFactory] = {}
        self.adapters: dict[str, AgentAdapter] = {}
        self._provided: list[tuple[str, str, str]] = []
        self.refresh()

    def register(self, plugin: object, name: str | None = None, package: str = "") -> None:
        """Register a plugin object or module by hand (tests, embedding applications)."""
        registered = self.manager.register(plugin, name=name)
        if registered:
            self._rank.setdefault(registered, len(self._rank))
            self._packages[registered] = package or getattr(plugin, "__name__", registered)

    @property
    def decomposers(self) -> dict[str, Decomposer]:
        """The decomposition strategies (SHIM's own are imported on first use)."""
        if self._decomposers is None:
            for ep in self._deferred:
                self._load(ep)
            self._deferred.clear()
            hook = self.manager.hook.shim_decomposers
            self._decomposers = self._collect("strategy", hook, Decomposer)
        return self._decomposers

    @property
    def provided(self) -> list[Provided]:
        """Every executor, strategy, backend and adapter, with the plugin and package it comes
        from: by kind (:data:`KINDS`), each in the order collected."""
        self.decomposers  # noqa: B018 (collects the strategies, if not yet done)
        found = sorted(self._provided, key=lambda item: KINDS.index(item[0]))
        return [Provided(kind, name, plugin, self._package(plugin)) for kind, name, plugin in found]

    def refresh(self) -> None:
        """Collect what every registered plugin provides (again)."""
        self._provided.clear()
        self.errors = list(self._load_errors)
        hook = self.manager.hook
        self.executors = self._collect("executor", hook.shim_executors, Executor)
        self._decomposers = None
        if not self._deferred:
            self._decomposers = self._collect("strategy", hook.shim_decomposers, Decomposer)
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
            self._rank.setdefault(ep.name, len(self._rank))
            if ep.value in STRATEGIES_ONLY:
                self._deferred.append(ep)
            else:
                self._load(ep)

    def _load(self, ep: EntryPoint) -> None:
        try:
            module = ep.load()
            self.manager.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin is reported, never fatal
            problem = self._fail(ep.name, f"cannot be loaded: {type(exc).__name__}: {exc}")
            self._load_errors.append(problem)
            return
        self._packages[ep.name] = ep

    def _collect(self, kind: str, caller: Any, protocol: Any) -> dict[str, Any]:
        # protocol: a runtime-checkable Protocol (mypy refuses abstract types as type[T])
        found: dict[str, Any] = {}
        last = len(self._rank)
        impls = sorted(
            caller.get_hookimpls(), key=lambda impl: self._rank.get(impl.plugin_name, last)
        )
        for impl in impls:  # in rank order: the first provider of a name wins
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
                    self._provided.append((kind, name, impl.plugin_name))
        return found

    def _package(self, plugin: str) -> str:
        """The package ``plugin`` comes from: its distribution's name for an entry point (read
        once per distribution), else what :meth:`register` was given."""
        package = self._packages.get(plugin, plugin)
        if isinstance(package, str):
            return package
        dist = package.dist
        if dist is None:
            self._packages[plugin] = package.value
            return package.value
        name: str = dist.name
        for key, value in self._packages.items():  # the other entry points of that distribution
            if not isinstance(value, str) and value.dist is dist:
                self._packages[key] = name
        return name

    def _fail(self, plugin: str, error: str) -> PluginError:
        problem = PluginError(plugin, error)
        self.errors.append(problem)
        log.warning("%s; skipped", problem)
        return problem
