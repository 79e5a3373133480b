"""``import redis`` without what SHIM never uses of it: ``redis/asyncio/__init__.py`` is not run
and ``importlib.metadata`` is not imported until something reads a name from them.

redis-py's ``redis/__init__.py`` starts with ``from redis import asyncio``, whose ``__init__``
imports the asyncio client, cluster, connection, sentinel... modules, and ``redis.utils`` does
``from importlib import metadata`` (for its version, which SHIM states itself: see
:func:`shim_core.connection._driver_info`), which imports the ``email`` package and zipfile.
Every process that only wants the sync client pays for both: about 3 % and 4 % of a
``shim worker`` start (see ``perf/worker_startup.py``).

How, with documented hooks of the import system only:

* :func:`install` (run by ``shim_core/__init__.py``, before any SHIM module imports redis) puts a
  finder first on :data:`sys.meta_path` (PEP 451). It answers only the first import of the
  top-level ``redis`` package, with the spec the other finders give and its loader wrapped; then
  it takes itself off.
* Just before redis-py's ``__init__`` runs, the wrapper puts in :data:`sys.modules` the module of
  ``redis.asyncio`` made from its real spec (``__path__``, ``__file__``...) but not executed: a
  :class:`_DeferredPackage`. ``from redis import asyncio`` binds it, and the sync modules that
  import submodules such as ``redis.asyncio.observability.recorder`` import them as usual.
* Reading any name the package does not have yet executes its ``__init__`` into that same module
  object, once (as ``importlib.util.LazyLoader`` does), and the module becomes an ordinary one:
  ``redis.asyncio.Redis`` after ``import redis``, ``from redis.asyncio import Redis``,
  ``import redis.asyncio as aioredis; aioredis.Redis`` all work as without this module. A name that
  is a submodule (``from redis.asyncio import client``) imports just that submodule, so importing
  ``redis.asyncio.client`` first works too: its own ``from redis.asyncio import _himport_exec``
  does not run the package's ``__init__`` half-way through it.
* While redis-py's modules run, ``importlib.metadata`` (the attribute of the ``importlib``
  package, which ``from importlib import metadata`` reads before importing anything) is a
  :class:`_Forward`: every name read from it comes from the real module, imported then. The
  attribute is removed afterwards, so everyone else imports the real module as usual.

Not ``LazyLoader`` itself: the import statement reads the module's ``__spec__``, which loads a
lazy module at once, and a submodule imported first would then be executed twice.

What differs from an eager import: ``dir()`` / ``vars()`` of ``redis.asyncio`` list only what has
been loaded until a name is read from it, and ``redis.utils.metadata`` is the forwarding module.
If redis was imported before SHIM, nothing is changed. Two threads reading from the package the
first time at once are serialised by a lock.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from typing import Any, cast

#: The package whose first import is intercepted, and its subpackage that is not executed.
PACKAGE = "redis"
DEFERRED = "redis.asyncio"
#: The module that is not imported while redis-py's modules run.
FORWARDED = "importlib.metadata"

#: Held while the deferred package's ``__init__`` runs; re-entered by that same thread.
_lock = threading.RLock()
_loading: set[str] = set()


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` has not run yet; it runs when a name it lacks is read.
    ``__getattr__`` is only called for names not in the module: its ``__path__``, ``__spec__``
    and imported submodules are read without loading anything."""

    def __getattr__(self, name: str) -> Any:
        with _lock:
            if type(self) is _DeferredPackage and self.__name__ not in _loading:
                submodule = f"{self.__name__}.{name}"
                if _find_spec(submodule, self.__path__) is not None:
                    return importlib.import_module(submodule)
                _execute(self)
            elif self.__name__ in _loading:  # a name read by the package's own __init__
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(self, name)


def _execute(module: types.ModuleType) -> None:
    """Run the package's ``__init__`` in ``module``, which then becomes an ordinary module (only
    once it has finished: another thread reading a missing name waits on :data:`_lock`)."""
    spec = module.__spec__
    assert spec is not None  # made by _defer from a spec with a loader
    assert spec.loader is not None
    _loading.add(module.__name__)
    try:
        spec.loader.exec_module(module)
    finally:
        _loading.discard(module.__name__)
    module.__class__ = types.ModuleType


def _find_spec(name: str, path: Sequence[str] | None) -> ModuleSpec | None:
    """The spec the finders on ``sys.meta_path`` (this module's aside) give for ``name``."""
    for finder in list(sys.meta_path):
        find = getattr(finder, "find_spec", None)
        if finder is not _FINDER and find is not None:
            spec: ModuleSpec | None = find(name, path)
            if spec is not None:
                return spec
    return None


def _defer(package: types.ModuleType) -> None:
    """Put the unexecuted module of :data:`DEFERRED` in ``sys.modules`` (unless it cannot be
    found there, or an unusual loader would load it: then it is imported as usual)."""
    import importlib.util

    spec = _find_spec(DEFERRED, getattr(package, "__path__", None))
    if DEFERRED in sys.modules or spec is None or not hasattr(spec.loader, "exec_module"):
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    sys.modules[DEFERRED] = module


class _Forward(types.ModuleType):
    """Stands for a module not imported yet: any name read from it imports the module (as
    usual, into ``sys.modules``) and comes from there."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


def _forward() -> _Forward | None:
    """Set ``importlib.metadata`` to a :class:`_Forward` unless it is imported already."""
    parent, _, child = FORWARDED.rpartition(".")
    package = sys.modules[parent]
    if FORWARDED in sys.modules or child in vars(package):
        return None
    stand_in = _Forward(FORWARDED)
    setattr(package, child, stand_in)
    return stand_in


def _unforward(stand_in: _Forward | None) -> None:
    """Remove the stand-in from its package (unless the real module replaced it meanwhile)."""
    parent, _, child = FORWARDED.rpartition(".")
    package = sys.modules[parent]
    if stand_in is not None and vars(package).get(child) is stand_in:
        delattr(package, child)


class _Loader:
    """The loader of :data:`PACKAGE` that defers :data:`DEFERRED` and :data:`FORWARDED`."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # From here on the package names its real loader (reload, get_source, resources).
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        module.__loader__ = self.loader
        stand_in = None
        try:
            _defer(module)
            stand_in = _forward()
            self.loader.exec_module(module)
        finally:
            _FINDER.remove()
            _unforward(stand_in)


class _Finder:
    """Answers the first import of :data:`PACKAGE` only; every other import goes on as usual."""

    def __init__(self) -> None:
        self.done = False

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: Any = None
    ) -> ModuleSpec | None:
        if name != PACKAGE or self.done:
            return None
        # Not taken off sys.meta_path here: the import system is iterating over it.
        self.done = True
        spec = _find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None  # not installed, or an unusual loader: the ordinary import
        # Duck-typed: importlib.abc would cost more to import than this module saves.
        spec.loader = cast(Any, _Loader(spec.loader))
        return spec

    def remove(self) -> None:
        self.done = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_FINDER = _Finder()


def install() -> None:
    """Defer ``redis.asyncio`` and ``importlib.metadata`` when redis is imported in this process
    (unless it is already)."""
    if PACKAGE not in sys.modules and not _FINDER.done and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
