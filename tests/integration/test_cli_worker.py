"""The fleet commands of the ``shim`` command line: ``plugins``, ``workers`` and ``worker``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shim_core import plugins as plugins_module
from shim_core.cli import app, main
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.hookspecs import hookimpl
from shim_core.models import Task, TaskStatus, WorkerRegistration, WorkerStatus
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from tests.helpers import wait_until

ENV_VARS = ("SHIM_REDIS_URL", "SHIM_NAMESPACE", "SHIM_LOAD_PLUGINS", "SHIM_DISABLE_PLUGINS")


class RaisingPlugin:
    """A plugin whose executor hook raises (loaded through a fake entry point below)."""

    @hookimpl
    def shim_executors(self) -> list[Any]:
        raise RuntimeError("executor hook exploded")


raising_plugin = RaisingPlugin()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner with no ``SHIM_*`` variable of the outer environment leaking in."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.fixture
def registry(shim_connection: RedisConnectionManager, shim_settings: Settings) -> WorkerRegistry:
    return WorkerRegistry(shim_connection, shim_settings)


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


# --------------------------------------------------------------------- plugins
def test_plugins_lists_what_the_entry_points_provide(runner: CliRunner) -> None:
    """`shim plugins` lists every executor and backend the installed plugins provide."""
    found = Plugins()

    result = invoke(runner, "plugins")

    assert result.exit_code == 0, result.output
    for provided in found.provided:
        assert provided.name in result.output
        assert provided.kind in result.output


def test_plugins_json_lists_the_same(runner: CliRunner) -> None:
    """`shim plugins --json` is valid JSON with what the installed plugins provide."""
    result = invoke(runner, "plugins", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = sorted((p.kind, p.name) for p in Plugins().provided)
    assert sorted((p["kind"], p["name"]) for p in data["provided"]) == expected
    assert data["errors"] == [str(e) for e in Plugins().errors]


def test_broken_plugins_do_not_crash_the_command(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that cannot be imported and one whose hook raises are reported by name; the
    command still lists the working plugins and exits 0."""
    real = plugins_module.entry_points
    broken = [
        EntryPoint("unimportable", "shim_no_such_module_xyz.plugin", "shim"),
        EntryPoint("raising", f"{__name__}:raising_plugin", "shim"),
    ]
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [*real(group=group), *broken])

    result = invoke(runner, "plugins")
    as_json = json.loads(invoke(runner, "plugins", "--json").stdout)

    assert result.exit_code == 0, result.output
    assert "error: plugin 'unimportable': cannot be loaded: ModuleNotFoundError" in result.output
    assert "error: plugin 'raising': executor hook raised RuntimeError" in result.output
    assert len(as_json["errors"]) == 2
    assert sorted(p["name"] for p in as_json["provided"]) == sorted(
        p.name for p in Plugins().provided if p.plugin not in ("unimportable", "raising")
    )


def test_disabled_plugins_are_not_loaded(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHIM_LOAD_PLUGINS set empty loads no entry point at all."""
    monkeypatch.setenv("SHIM_LOAD_PLUGINS", "")

    result = invoke(runner, "plugins", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"provided": [], "errors": []}


# --------------------------------------------------------------------- workers
def test_workers_shows_the_registered_workers(
    runner: CliRunner, target: list[str], registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """`shim workers` shows each worker with its status, statistics and current task."""
    registry.register_worker(WorkerRegistration(id="w-alpha", name="alpha"))
    registry.register_worker(WorkerRegistration(id="w-beta"))
    registry.declare_crashed("w-beta")
    shim_queue.add(Task(id="job-1"))
    shim_queue.claim(["code"], worker_id="w-alpha")

    result = invoke(runner, "workers", *target)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WORKER", "STATUS", "DONE", "FAILED", "SEEN", "CURRENT"]
    assert len(lines) == 3
    alpha = next(line for line in lines if line.startswith("w-alpha"))
    beta = next(line for line in lines if line.startswith("w-beta"))
    assert alpha.split()[1] == "busy"  # from the lease it holds now, not the last heartbeat
    assert alpha.endswith("job-1")
    assert beta.split()[1] == "crashed"
    assert beta.endswith("-")


def test_workers_drops_workers_gone_long_ago_and_tasks_no_longer_held(
    runner: CliRunner, target: list[str], registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    registry.register_worker(WorkerRegistration(id="w-old"))
    registry.declare_crashed("w-old")
    registry.client.hset(registry.keys.worker("w-old"), "last_seen", 1)  # 1970
    registry.register_worker(WorkerRegistration(id="w-live"))
    shim_queue.add(Task(id="job-2"))
    (claim,) = shim_queue.claim(["code"], worker_id="w-live")
    shim_queue.cancel("job-2")  # the registry may still name it: the leases decide

    lines = invoke(runner, "workers", *target).stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:-1]] == [["w-live", "idle"]]
    assert lines[-1] == "(1 worker(s) that crashed or left long ago not shown: --all)"
    every = invoke(runner, "workers", *target, "--all").stdout
    assert "w-old" in every
    data = json.loads(invoke(runner, "workers", *target, "--json").stdout)
    assert [(w["id"], w["status"], w["running"]) for w in data] == [("w-live", "idle", [])]
    assert claim.token > 0


def test_workers_json(runner: CliRunner, target: list[str], registry: WorkerRegistry) -> None:
    """`shim workers --json` prints every worker as a JSON object."""
    registry.register_worker(WorkerRegistration(id="w-alpha", name="alpha", pid=321))
    registry.register_worker(WorkerRegistration(id="w-beta"))
    registry.unregister_worker("w-beta")

    result = invoke(runner, "workers", *target, "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(w["id"], w["name"], w["status"]) for w in data] == [
        ("w-alpha", "alpha", "idle"),
        ("w-beta", "w-beta", "offline"),
    ]
    assert data[0]["pid"] == 321
    assert data[0]["capabilities"]["supported_task_types"]


def test_workers_on_an_empty_namespace(runner: CliRunner, target: list[str]) -> None:
    """`shim workers` on a namespace without workers says so (and --json prints [])."""
    result = invoke(runner, "workers", *target)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("no workers in namespace ")
    assert json.loads(invoke(runner, "workers", *target, "--json").stdout) == []


# ---------------------------------------------------------------------- worker
def test_worker_refuses_the_embedded_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shim worker` without a Redis URL exits 2 with a one-line error: a worker process needs
    a real server."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(SystemExit) as info:
        main(["worker"])

    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: a worker process needs a Redis server")
    assert "Traceback" not in err


def test_worker_rejects_a_bad_heartbeat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A heartbeat below 0.05 s is refused as a usage error before anything connects."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(SystemExit) as info:
        main(["worker", "--redis", "redis://127.0.0.1:1/0", "--heartbeat", "0.001"])

    assert info.value.code == 2
    assert "--heartbeat" in capsys.readouterr().err


@pytest.mark.shim_real_redis
def test_worker_process_runs_a_task_and_stops_on_sigterm(
    shim_settings: Settings,
    shim_queue: TaskQueue,
    registry: WorkerRegistry,
    tmp_path: Path,
) -> None:
    """A `shim worker` process registers, completes a task, and on SIGTERM exits 0 and is
    marked offline."""
    if "sim" not in Plugins().executors:
        pytest.skip("the built-in 'sim' executor is not registered (yet)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    log_path = tmp_path / "worker.log"
    args = [
        sys.executable,
        "-m",
        "shim_core.cli",
        "worker",
        "--redis",
        shim_settings.redis_url,
        "--namespace",
        shim_settings.namespace,
        "--heartbeat",
        "1.0",
        "--default-executor",
        "sim",
        "--id",
        "cli-worker-1",
        "--types",
        "code,docs",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: registry.get_worker("cli-worker-1") or process.poll(), timeout=30)
        assert process.poll() is None, log_path.read_text()
        worker = registry.get_worker("cli-worker-1")
        assert worker.status in (WorkerStatus.IDLE, WorkerStatus.BUSY)
        assert worker.pid == process.pid

        shim_queue.add(Task(id="sim-1", type="code", params={"output": "simulated"}))
        task = wait_until(
            lambda: (t := shim_queue.get("sim-1")).status is TaskStatus.COMPLETE and t,
            timeout=20,
        )
        assert (task.worker_id, task.result.output) == ("cli-worker-1", "simulated")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    worker = registry.get_worker("cli-worker-1")
    assert worker.status is WorkerStatus.OFFLINE
    assert worker.stats.tasks_completed == 1
    assert "cli-worker-1" not in registry.live_worker_ids()
    assert "joined" in log_path.read_text()
    assert "warning: type 'docs' is neither built in nor declared" in log_path.read_text()


def test_an_empty_answer_from_the_embedded_store_says_where_it_looked(runner: CliRunner) -> None:
    """Without --redis a command talks to its own empty store: it says so instead of only
    'nothing there'."""
    result = runner.invoke(app, ["workers"], env={"SHIM_REDIS_URL": ""}, catch_exceptions=False)
    assert "no workers in namespace 'default' at embedded://" in result.stdout
    assert "give --redis URL" in result.stdout
