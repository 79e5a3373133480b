"""SHIM's built-in plugins load through the ``shim`` entry points like any third-party plugin;
broken plugins are reported and skipped; environment switches filter entry points."""

import types

import pytest

from shim_core import Task
from shim_core.contracts import CheckpointBackend, Executor
from shim_core.hookspecs import hookimpl
from shim_core.plugins import Plugins
from shim_plugins.executors import SimExecutor


def plugin_module(name, **hooks):
    """A module-like plugin object whose given functions are shim hook implementations."""
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return module


def raising():
    raise RuntimeError("plugin exploded")


def test_entry_points_provide_the_builtin_executors_and_backends():
    """With no switches set, sim/python/shell and redis/filesystem come from package "shim"."""
    plugins = Plugins(env={})
    assert {"sim", "python", "shell"} <= set(plugins.executors)
    assert {"redis", "filesystem"} <= set(plugins.backends)
    assert all(isinstance(e, Executor) for e in plugins.executors.values())
    kinds = ("executor", "checkpoint backend")
    builtin = {
        (p.kind, p.name): p for p in plugins.provided if p.package == "shim" and p.kind in kinds
    }
    assert set(builtin) == {
        ("executor", "sim"),
        ("executor", "agent"),
        ("executor", "python"),
        ("executor", "shell"),
        ("checkpoint backend", "redis"),
        ("checkpoint backend", "filesystem"),
    }
    assert {p.plugin for p in builtin.values()} == {"shim-executors", "shim-checkpoints"}
    assert plugins.errors == []


def test_builtin_backend_factories_create_backends(shim_connection, shim_settings, tmp_path):
    """Each backend factory found through the plugins builds a working CheckpointBackend."""
    plugins = Plugins(env={})
    for name in ("redis", "filesystem"):
        backend = plugins.backends[name].create(shim_connection, shim_settings)
        assert isinstance(backend, CheckpointBackend)
        assert backend.latest("missing") is None


def test_tasks_naming_a_builtin_executor_find_it():
    """executor_for resolves task.executor to the built-in executor of that name."""
    plugins = Plugins(env={})
    assert plugins.executor_for(Task(executor="shell")).name == "shell"
    assert plugins.executor_for(Task(type="code")) is None
    assert plugins.executor_for(Task(type="code"), default="sim").name == "sim"


def test_a_raising_plugin_is_reported_and_the_rest_still_load():
    """A plugin whose hook raises is named in .errors; built-ins and good plugins still load."""
    broken = plugin_module("broken_plugin", shim_executors=raising)
    plugins = Plugins(env={}, extra=[broken])
    assert [e.plugin for e in plugins.errors] == ["broken_plugin"]
    assert "RuntimeError: plugin exploded" in plugins.errors[0].error
    assert {"sim", "python", "shell"} <= set(plugins.executors)
    assert {"redis", "filesystem"} <= set(plugins.backends)


def test_a_plugin_returning_non_executors_is_reported_and_its_valid_items_kept():
    """Items that are not executors are reported by plugin name; its real executors register."""
    extra = SimExecutor(name="sim-extra")
    odd = plugin_module("odd_plugin", shim_executors=lambda: [object(), extra, "shell"])
    plugins = Plugins(env={}, extra=[odd])
    assert [e.plugin for e in plugins.errors] == ["odd_plugin", "odd_plugin"]
    assert all("which is not a executor" in e.error for e in plugins.errors)
    assert plugins.executors["sim-extra"] is extra
    assert {"sim", "python", "shell"} <= set(plugins.executors)


def test_a_second_executor_with_a_taken_name_is_reported_once():
    """Two executors named "sim" yield one registered executor and one "already provided" error."""
    clash = plugin_module("clash_plugin", shim_executors=lambda: [SimExecutor()])
    plugins = Plugins(env={}, extra=[clash])
    assert len(plugins.errors) == 1
    assert "executor 'sim' is already provided" in plugins.errors[0].error
    assert len([p for p in plugins.provided if p.name == "sim"]) == 1
    assert {"python", "shell"} <= set(plugins.executors)


@pytest.mark.parametrize(
    ("env", "executors", "backends"),
    [
        ({"SHIM_LOAD_PLUGINS": "shim-checkpoints"}, False, True),
        ({"SHIM_LOAD_PLUGINS": " shim-executors , shim-checkpoints "}, True, True),
        ({"SHIM_LOAD_PLUGINS": ""}, False, False),
        ({"SHIM_DISABLE_PLUGINS": "shim-executors"}, False, True),
        ({"SHIM_DISABLE_PLUGINS": "shim-checkpoints,shim-executors"}, False, False),
        (
            {"SHIM_LOAD_PLUGINS": "executors", "SHIM_DISABLE_PLUGINS": "shim-executors"},
            False,
            False,
        ),
    ],
)
def test_environment_switches_filter_entry_points(env, executors, backends):
    """SHIM_LOAD_PLUGINS keeps only the named entry points and SHIM_DISABLE_PLUGINS drops some."""
    plugins = Plugins(env=env)
    assert ({"sim", "python", "shell"} <= set(plugins.executors)) is executors
    assert ("sim" in plugins.executors) is executors
    assert ({"redis", "filesystem"} <= set(plugins.backends)) is backends
    assert ("redis" in plugins.backends) is backends
    assert plugins.errors == []
