"""examples/plugin_hello, the example third-party executor plugin, without installing it: its
``src`` goes on sys.path and the plugin module is registered by hand (or found through a
stand-in of its installed metadata)."""

from __future__ import annotations

import importlib
import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_shim.fleet import Fleet
from shim_core import cli
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import Task, TaskStatus
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.supervisor import Supervisor
from tests.helpers import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_hello"
PLAN = EXAMPLE / "hello_plan.yaml"


@pytest.fixture
def hello_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``shim_hello.plugin`` imported from the example's ``src`` directory."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    return importlib.import_module("shim_hello.plugin")


@pytest.fixture
def hello_plugins(hello_module: ModuleType) -> Plugins:
    """The environment's plugins plus hello as an extra (its entry point, should the package
    be installed, is skipped so it is not registered twice)."""
    env = {**os.environ, "SHIM_DISABLE_PLUGINS": "hello"}
    return Plugins(extra=[hello_module], env=env)


@pytest.fixture
def hello_fleet(
    shim_fleet_factory: Callable[..., Fleet], hello_plugins: Plugins
) -> Callable[[int], Fleet]:
    """Start N worker threads that have the hello plugin."""
    return lambda n: shim_fleet_factory(
        workers=n, mode="thread", heartbeat=0.5, plugins=hello_plugins
    )


def test_the_example_provides_the_hello_executor(hello_plugins: Plugins) -> None:
    """Registered as an extra plugin, the example adds the executor hello for the type greet."""
    hello = hello_plugins.executors["hello"]
    assert (hello.name, hello.task_types) == ("hello", ("greet",))
    assert "sim" in hello_plugins.executors  # the built-ins are still there
    assert not hello_plugins.errors


def test_thread_fleet_runs_a_greet_task(
    hello_fleet: Callable[[int], Fleet], shim_queue: TaskQueue
) -> None:
    """A worker thread with the plugin runs a greet task to completion with the hello output
    and its progress."""
    fleet = hello_fleet(1)
    shim_queue.add_many(
        [
            Task(id="hi", type="greet", params={"name": "Ada"}),
            Task(id="default", type="greet", executor="hello"),
        ]
    )

    fleet.wait_idle(timeout=30)

    hi, default = shim_queue.get_many(["hi", "default"])
    assert (hi.status, hi.result.output) == (TaskStatus.COMPLETE, "hello, Ada")
    assert (hi.progress, hi.progress_message) == (1.0, "greeted")
    assert hi.worker_id == fleet.workers[0].id
    assert default.result.output == "hello, world"
    assert any(
        "said 'hello, Ada'" in line
        for line in shim_queue.client.lrange(shim_queue.keys.log("hi"), 0, -1)
    )


def test_hello_plan_runs_through_the_supervisor(
    hello_fleet: Callable[[int], Fleet],
    hello_plugins: Plugins,
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
) -> None:
    """The example's hello_plan.yaml is accepted (executor and type known through the plugin)
    and runs to completion, Grace greeted after Ada."""
    hello_fleet(2)
    with Supervisor(shim_connection, shim_settings, plugins=hello_plugins) as supervisor:
        run = supervisor.submit(supervisor.decompose(str(PLAN)))
        report = supervisor.wait(run.run_id, timeout=30)

    assert report.ok
    outputs = {t.id: t.result.output for t in report.tasks if t.result is not None}
    assert outputs == {
        "greet-world": "hello, world",
        "greet-ada": "hello, Ada",
        "greet-grace": "hello, Grace",
    }
    times = {t.id: (t.started_at, t.completed_at) for t in report.tasks}
    assert times["greet-ada"][1] <= times["greet-grace"][0]


def test_without_the_plugin_the_plan_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without shim-hello (not installed, or disabled), ``shim plan hello_plan.yaml`` exits 2
    naming the unknown type and executor."""
    monkeypatch.setenv("SHIM_DISABLE_PLUGINS", "hello")
    with pytest.raises(SystemExit) as exc:
        cli.main(["plan", str(PLAN)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "task 'greet-world': unknown type 'greet'" in err
    assert "task 'greet-world': unknown executor 'hello'" in err


def write_metadata(root: Path) -> None:
    """A stand-in for what ``pip install`` records: a dist-info with the example's entry
    points, read from its pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = root / f"shim_hello-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
        encoding="utf-8",
    )
    lines = ["[shim]"] + [f"{k} = {v}" for k, v in project["entry-points"]["shim"].items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_entry_point_discovery_and_shim_run(
    hello_module: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the package's metadata on sys.path (as after ``pip install``), SHIM finds hello
    through the ``shim`` entry point, and ``shim run hello_plan.yaml --yes --json`` completes
    every greeting."""
    write_metadata(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE", "SHIM_LOAD_PLUGINS", "SHIM_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)

    plugins = Plugins()
    assert "hello" in plugins.executors
    [provided] = [p for p in plugins.provided if p.name == "hello"]
    assert (provided.kind, provided.plugin, provided.package) == ("executor", "hello", "shim-hello")

    cli.main(["run", str(PLAN), "--yes", "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["summary"] == {"complete": 3}
    assert {t["id"]: t["result"]["output"] for t in report["tasks"]} == {
        "greet-world": "hello, world",
        "greet-ada": "hello, Ada",
        "greet-grace": "hello, Grace",
    }


def test_fleet_factory_accepts_plugins(
    shim_fleet_factory: Callable[..., Fleet], hello_plugins: Plugins, shim_queue: TaskQueue
) -> None:
    """``shim_fleet_factory(..., plugins=...)`` gives thread workers extra plugins."""
    fleet = shim_fleet_factory(workers=1, mode="thread", heartbeat=0.5, plugins=hello_plugins)
    shim_queue.add(Task(id="hi", type="greet"))
    wait_until(lambda: shim_queue.get("hi").status is TaskStatus.COMPLETE, timeout=15)
    assert fleet.workers
