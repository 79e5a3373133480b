"""The hooks a SHIM plugin implements (pluggy project ``shim``, entry-point group ``shim``).

A plugin is any module or object with functions decorated by :data:`hookimpl`::

    from shim_core.hookspecs import hookimpl

    @hookimpl
    def shim_executors():
        return [MyExecutor()]

and registered in its package metadata::

    [project.entry-points.shim]
    my_plugin = "my_package.shim_plugin"

SHIM's own executors, strategies and checkpoint backends register through these same hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from shim_core.contracts import AgentAdapter, CheckpointBackendFactory, Decomposer, Executor

PROJECT = "shim"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def shim_executors() -> Sequence[Executor]:
    """Return the executors this plugin provides.

    Called once when a worker (or ``shim plugins``) loads plugins. Each executor has a unique
    ``name``; a task selects one by ``task.executor``, or by type through ``task_types``.
    """
    raise NotImplementedError


@hookspec
def shim_decomposers() -> Sequence[Decomposer]:
    """Return the decomposition strategies this plugin provides.

    Called when the supervisor decomposes a request; ``shim run --strategy NAME`` picks one.
    """
    raise NotImplementedError


@hookspec
def shim_checkpoint_backends() -> Sequence[CheckpointBackendFactory]:
    """Return factories of checkpoint backends (selected by name in the settings)."""
    raise NotImplementedError


@hookspec
def shim_agent_adapters() -> Sequence[AgentAdapter]:
    """Return adapters for coding-agent CLIs (used by the ``agent`` executor).

    A task runs one with ``executor: agent`` and ``params: {agent: NAME}``; the adapter builds
    the command line and reads the CLI's output into an :class:`~shim_core.contracts.AgentState`.
    """
    raise NotImplementedError
