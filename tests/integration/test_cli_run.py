"""The run commands of the CLI: ``shim run`` (in-process and as a subprocess, on a private
redis-server or on fakeredis), ``shim plan``, ``shim submit``, ``shim status``, ``shim cancel``
and ``shim retry``, with their exit codes and the ``--json`` report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import TaskStatus
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.supervisor import Supervisor
from shim_core.supervisor.runs import latest_run_id
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
AUTH = str(ROOT / "examples" / "auth_system.yaml")
AUTH_IDS = {
    "schema",
    "model",
    "service",
    "login",
    "register",
    "test-model",
    "test-service",
    "test-api",
}
AUTH_DEPS = {
    "model": {"schema"},
    "service": {"model"},
    "login": {"service"},
    "register": {"service"},
    "test-model": {"model"},
    "test-service": {"service"},
    "test-api": {"login", "register"},
}
#: The --json report as README.md documents it (README leaves out the extra ``name`` field).
REPORT_KEYS = {"run_id", "ok", "summary", "duration_ms", "waves", "tasks", "cost_usd", "merge"}
TASK_KEYS = [
    "id",
    "status",
    "attempts",
    "worker",
    "started_at",
    "completed_at",
    "duration_ms",
    "result",
]
RESULT_KEYS = ["success", "output", "files_modified", "error"]
SLOWDOWN = "0.2"  # SHIM_SIM_SLOWDOWN for these runs: the same plan, a fifth of the sleeping
FAILING_PLAN = {
    "name": "failing",
    "defaults": {"executor": "sim"},
    "tasks": [
        {"id": "setup", "params": {"duration": 0.5}},  # the aggregator listens by its end
        {"id": "bad", "deps": ["setup"], "max_attempts": 1, "params": {"fail_first": 9}},
        {"id": "child", "deps": ["bad"]},
        {"id": "grandchild", "deps": ["child"]},
        {"id": "independent"},
    ],
}

Shim = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHIM_* variable of the outer environment leaks in; simulated work runs faster."""
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE", "SHIM_SIM_FAIL_RATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHIM_SIM_SLOWDOWN", SLOWDOWN)


def run_subprocess(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m shim_core.cli ARGS`` in a fresh interpreter."""
    base = {k: v for k, v in os.environ.items() if k not in ("SHIM_REDIS_URL", "SHIM_NAMESPACE")}
    return subprocess.run(
        [sys.executable, "-m", "shim_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, "SHIM_SIM_SLOWDOWN": SLOWDOWN, **(env or {})},
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def plan_file(tmp_path: Path) -> Callable[..., str]:
    """Write a plan (a mapping) to a YAML file; returns its path."""

    def write(data: dict[str, Any], name: str = "plan.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def submitted(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Callable[..., str]:
    """Submit a plan as a new run of the test's namespace (on any backend); returns its id."""

    def submit(path: str = AUTH) -> str:
        supervisor = Supervisor(shim_connection, shim_settings)
        try:
            return supervisor.submit(supervisor.decompose(path)).run_id
        finally:
            supervisor.stop()

    return submit


@pytest.fixture
def threads(shim_fleet_factory: Callable[..., Fleet]) -> Callable[[int], Fleet]:
    """Start a thread fleet of N sim workers on the test's namespace."""
    return lambda n: shim_fleet_factory(workers=n, mode="thread", heartbeat=0.5)


def check_report_schema(report: dict[str, Any]) -> None:
    """The documented shape of a ``--json`` report, for every task."""
    assert set(report) == REPORT_KEYS | {"name"}
    assert isinstance(report["run_id"], str)
    assert isinstance(report["ok"], bool)
    assert all(isinstance(n, int) for n in report["summary"].values())
    assert isinstance(report["duration_ms"], int)
    assert all(isinstance(w, list) for w in report["waves"])
    for task in report["tasks"]:
        assert list(task) == TASK_KEYS
        for stamp in ("started_at", "completed_at"):
            if task[stamp] is not None:
                assert task[stamp].endswith("Z")
                assert datetime.fromisoformat(task[stamp]).utcoffset().total_seconds() == 0
        if task["result"] is not None:
            assert list(task["result"]) == RESULT_KEYS
            assert isinstance(task["result"]["files_modified"], list)


def check_auth_report(report: dict[str, Any]) -> None:
    """The auth plan ran completely, every task after its dependencies."""
    check_report_schema(report)
    assert report["ok"] is True
    assert report["name"] == "auth-system"
    assert report["summary"] == {"complete": 8}
    assert report["waves"] == [
        ["schema"],
        ["model"],
        ["service", "test-model"],
        ["login", "register", "test-service"],
        ["test-api"],
    ]
    order = [t["id"] for t in report["tasks"]]
    assert set(order) == AUTH_IDS
    for task, deps in AUTH_DEPS.items():
        assert all(order.index(d) < order.index(task) for d in deps), order
    for task in report["tasks"]:
        assert (task["status"], task["attempts"]) == ("complete", 1)
        assert task["worker"].startswith("local-")
        assert task["result"]["success"] is True
        assert task["duration_ms"] >= 0
        # Compared as times: ISO 8601 text omits a zero fraction ("...21Z" > "...21.147Z").
        started, completed = (
            datetime.fromisoformat(task[k].replace("Z", "+00:00"))
            for k in ("started_at", "completed_at")
        )
        assert started <= completed


# ======================================================================== shim run
def test_run_auth_system_in_process(shim: Shim) -> None:
    """``shim run examples/auth_system.yaml --yes`` shows the plan and progress on stderr and a
    report of 8 complete tasks on stdout, and exits 0."""
    code, out, err = shim("run", AUTH, "--yes")

    assert code == 0, err
    assert "Plan 'auth-system': 8 task(s) in 5 wave(s)" in err
    assert "  4: login, register, test-service  (parallel)" in err
    where = "a private redis-server" if shutil.which("redis-server") else "fakeredis"
    assert re.search(rf"Run [0-9a-f]{{10}} on .*{where}.*, 3 local worker\(s\)", err)
    assert "complete  test-api (attempt 1)" in err
    assert re.search(r"^Run [0-9a-f]{10} \(auth-system\): all tasks complete in ", out, re.M)
    for task_id in AUTH_IDS:
        assert re.search(rf"^  ok {re.escape(task_id)} +complete +attempts 1 ", out, re.M)
    assert out.rstrip().endswith("Summary: 8 complete")


def test_run_auth_system_as_a_subprocess() -> None:
    """The same run through ``python -m shim_core.cli`` exits 0 with 8 complete tasks."""
    proc = run_subprocess("run", AUTH, "--yes")

    assert proc.returncode == 0, proc.stderr
    assert "Summary: 8 complete" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_run_json_report_schema(shim: Shim) -> None:
    """``--json`` prints only the report, with exactly the documented fields."""
    code, out, err = shim("run", AUTH, "--yes", "--json")

    assert code == 0, err
    assert err == ""
    check_auth_report(json.loads(out))


def test_run_json_as_a_subprocess_with_more_workers() -> None:
    """A subprocess run with ``--workers 5 --json`` prints a parseable report of the whole
    plan."""
    proc = run_subprocess("run", AUTH, "--workers", "5", "--json", "--yes")

    assert proc.returncode == 0, proc.stderr
    check_auth_report(json.loads(proc.stdout))


def test_a_task_failing_for_good_exits_1_and_cancels_its_dependents(
    shim: Shim, plan_file: Callable[..., str]
) -> None:
    """A task that fails on its only attempt makes the run exit 1 with its dependents cancelled
    (never run) in the report, while independent tasks still complete."""
    path = plan_file(FAILING_PLAN)
    code, out, err = shim("run", path, "--yes", "--json")

    assert code == 1, err
    report = json.loads(out)
    check_report_schema(report)
    assert report["ok"] is False
    assert report["summary"] == {"complete": 2, "failed": 1, "cancelled": 2}
    tasks = {t["id"]: t for t in report["tasks"]}
    bad = tasks["bad"]
    assert (bad["status"], bad["attempts"]) == ("failed", 1)
    assert bad["result"]["success"] is False
    assert "simulated failure of attempt 1" in bad["result"]["error"]
    for task_id in ("child", "grandchild"):
        task = tasks[task_id]
        assert (task["status"], task["attempts"], task["worker"]) == ("cancelled", 0, None)
        assert (task["started_at"], task["duration_ms"]) == (None, None)
        assert task["result"]["error"] == f"dependency {report['run_id']}:bad failed"
    order = [t["id"] for t in report["tasks"]]
    assert order.index("setup") < order.index("bad") < order.index("child")

    code, out, _ = shim("run", path, "--yes")
    assert code == 1
    assert "NOT complete" in out
    assert re.search(r"^  FAIL bad +failed .*error: simulated failure", out, re.M)
    assert re.search(r"^  skip child +cancelled", out, re.M)
    assert "Summary: 1 cancelled" not in out
    assert "Summary: 2 cancelled, 2 complete, 1 failed" in out


BAD_PLANS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown key": (
        {"tasks": [{"id": "a", "executor": "sim", "dep": ["b"]}, {"id": "b"}]},
        "task 'a': unknown key 'dep' (allowed: id, title, type, executor, params, "
        "description, priority, deps, dependencies, max_attempts, timeout, files, estimate, "
        "acceptance, workdir); "
        "did you mean 'deps'?",
    ),
    "cycle": (
        {
            "tasks": [
                {"id": "a", "deps": ["c"]},
                {"id": "b", "deps": ["a"]},
                {"id": "c", "deps": ["b"]},
            ]
        },
        "task 'a': dependency cycle a -> c -> b -> a",
    ),
    "missing dependency": (
        {"tasks": [{"id": "a", "deps": ["ghost"]}]},
        "task 'a': depends on unknown task 'ghost'",
    ),
    "unknown executor": (
        {"tasks": [{"id": "a", "executor": "nope"}]},
        "task 'a': unknown executor 'nope' (available: agent, python, shell, sim)",
    ),
}


@pytest.mark.parametrize("problem", list(BAD_PLANS))
def test_bad_plan_exits_2_with_one_line(
    shim: Shim, plan_file: Callable[..., str], problem: str
) -> None:
    """A plan with one problem is refused before anything runs: exit 2, one ``error:`` line
    naming the file and the task, no traceback."""
    data, message = BAD_PLANS[problem]
    path = plan_file(data)

    code, out, err = shim("run", path, "--yes")

    assert code == 2
    assert out == ""
    assert err.splitlines() == [f"error: {path}: {message}"]


def test_bad_plan_lists_every_problem_one_a_line(shim: Shim, plan_file: Callable[..., str]) -> None:
    """Several structural problems are reported together, one line each, with exit 2 (also
    from a real process, without a traceback)."""
    path = plan_file(
        {
            "tasks": [
                {"id": "a", "deps": ["b"], "colour": "red"},
                {"id": "b", "deps": ["a"]},
                {"id": "c", "deps": ["zz"]},
                {"id": "c"},
            ]
        }
    )

    code, _, err = shim("plan", path)

    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"error: {path}: task 'a': unknown key 'colour'")
    assert f"{path}: task 'c': duplicate id (tasks #3, #4)" in lines
    assert f"{path}: task 'c': depends on unknown task 'zz'" in lines
    assert f"{path}: task 'a': dependency cycle a -> b -> a" in lines
    proc = run_subprocess("run", path, "--yes")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == lines
    assert "Traceback" not in proc.stderr


def test_bad_plan_reports_unknown_executors_with_structural_problems(
    shim: Shim, plan_file: Callable[..., str]
) -> None:
    """An unknown executor is reported alongside an unknown key in the same refusal."""
    path = plan_file({"tasks": [{"id": "a", "executor": "nope"}, {"id": "b", "colour": "red"}]})
    code, _, err = shim("run", path, "--yes")
    assert code == 2
    assert "unknown executor 'nope'" in err
    assert "unknown key 'colour'" in err


def test_unreadable_plan_file_exits_2(shim: Shim, tmp_path: Path) -> None:
    """A plan path that does not exist is bad input, not a one-task request."""
    missing = tmp_path / "missing.yaml"
    code, out, err = shim("run", str(missing), "--yes")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: no such plan file: {missing}")


def test_run_without_redis_server_on_path_uses_fakeredis(tmp_path: Path) -> None:
    """With no redis-server on PATH, ``shim run`` falls back to the in-process fakeredis and
    still completes the plan with exit 0."""
    empty = tmp_path / "bin"
    empty.mkdir()
    path = os.pathsep.join([str(Path(sys.executable).parent), str(empty)])
    if shutil.which("redis-server", path=path):
        pytest.skip("the virtualenv's bin directory holds a redis-server")

    proc = run_subprocess("run", AUTH, "--yes", env={"PATH": path})

    assert proc.returncode == 0, proc.stderr
    assert "on the in-process embedded Redis (fakeredis" in proc.stderr
    assert "Summary: 8 complete" in proc.stdout


# ======================================================================= shim plan
def test_plan_text(shim: Shim) -> None:
    """``shim plan`` shows tasks, waves and the estimate without running anything."""
    code, out, err = shim("plan", AUTH)

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Plan 'auth-system': 8 task(s) in 5 wave(s)"
    assert re.match(r"  schema +code +high +sim +~0\.6s  no dependencies  Design", lines[1])
    assert re.search(r"^  test-api +test +normal +sim +~0\.5s  after login, register  ", out, re.M)
    assert "Waves:\n  1: schema\n  2: model\n  3: service, test-model  (parallel)\n" in out
    assert lines[-1] == (
        "Estimate: ~3.6s with 3 worker(s), ~3.6s with unlimited workers, ~4.8s serial; "
        "parallelisation factor 1.33x"
    )


def test_plan_json(shim: Shim) -> None:
    """``shim plan --json`` gives the decomposition with waves, critical path, estimates and
    the makespan for the chosen worker count."""
    code, out, _ = shim("plan", AUTH, "--json", "--workers", "1")

    assert code == 0
    data = json.loads(out)
    assert set(data) == {
        "name",
        "request",
        "on_failure",
        "tasks",
        "waves",
        "estimates",
        "serial_duration",
        "estimated_total_duration",
        "parallelization_factor",
        "critical_path",
        "makespan",
    }
    assert data["name"] == "auth-system"
    assert data["on_failure"] == "cancel-dependents"
    assert data["critical_path"] == ["schema", "model", "service", "register", "test-api"]
    assert data["estimated_total_duration"] == pytest.approx(3.6)
    assert data["serial_duration"] == pytest.approx(4.8)
    assert data["makespan"] == {"1": pytest.approx(4.8)}
    assert data["tasks"][0] == {
        "id": "schema",
        "title": "Design the users and sessions database schema",
        "type": "code",
        "executor": "sim",
        "priority": "high",
        "deps": [],
        "estimate": 0.6,
    }


def test_plan_of_a_numbered_request(shim: Shim) -> None:
    """A numbered request string becomes tasks with dependencies, guessed types and waves."""
    request = (
        "Build auth:\n1. Design the schema\n2. Build the API (after 1)\n"
        "3. Write tests (after 2)\n4. Write docs"
    )
    code, out, _ = shim("plan", request, "--json")

    assert code == 0
    data = json.loads(out)
    assert data["name"] == "Build auth"
    tasks = {t["id"]: t for t in data["tasks"]}
    assert list(tasks) == ["1", "2", "3", "4"]
    assert [t["deps"] for t in tasks.values()] == [[], ["1"], ["2"], []]
    assert [t["type"] for t in tasks.values()] == ["code", "code", "test", "document"]
    assert tasks["2"]["title"] == "Build the API"
    assert {t["executor"] for t in tasks.values()} == {"sim"}
    assert data["waves"] == [["1", "4"], ["2"], ["3"]]

    code, out, _ = shim("plan", request)
    assert code == 0
    assert out.startswith("Plan 'Build auth': 4 task(s) in 3 wave(s)")


# ==================================================== submit, status, cancel, retry
@pytest.mark.shim_real_redis
def test_submit_status_and_wait_with_a_fleet(
    shim: Shim, target: list[str], threads: Callable[[int], Fleet]
) -> None:
    """A submitted run shows as queued in ``status RUN`` until a fleet works on it, then
    ``status --watch`` waits for its end, and ``submit --wait --json`` prints a new run's
    report."""
    code, out, _ = shim("submit", AUTH, *target)
    assert code == 0
    run_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{10}", run_id)

    code, out, _ = shim("status", run_id, *target, "--json")
    assert code == 0
    status = json.loads(out)
    assert (status["finished"], status["percent_complete"]) == (False, 0.0)
    assert status["report"]["summary"] == {"pending": 1, "waiting": 7}
    code, out, _ = shim("status", run_id, *target)
    assert "0/8 finished, 0 running, 8 queued" in out

    threads(3)
    code, out, err = shim("status", run_id, *target, "--watch")
    assert code == 0, err
    assert re.search(rf"^Run {run_id} \(auth-system\): all tasks complete", out, re.M)
    assert "Summary: 8 complete" in out

    code, out, _ = shim("status", run_id, *target, "--json")
    status = json.loads(out)
    assert (status["finished"], status["percent_complete"]) == (True, 1.0)
    assert status["report"]["ok"] is True

    code, out, err = shim("submit", AUTH, *target, "--wait", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["run_id"] != run_id
    check_report_schema(report)
    assert report["summary"] == {"complete": 8}

    code, out, _ = shim("status", *target, "--json")
    assert json.loads(out) == {
        "paused": False,
        "by_type": {"code": {"complete": 10}, "test": {"complete": 6}},
        "cooldowns": {},
    }


@pytest.mark.shim_real_redis
def test_status_watch_prints_the_final_progress(
    shim: Shim,
    target: list[str],
    plan_file: Callable[..., str],
    threads: Callable[[int], Fleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After ``status RUN --watch`` returns, its progress line shows the run at 100 %."""
    monkeypatch.setenv("SHIM_SIM_SLOWDOWN", "1")
    path = plan_file({"tasks": [{"id": "one", "executor": "sim", "params": {"duration": 1.0}}]})
    _, run_id, _ = shim("submit", path, *target)
    threads(1)
    code, out, _ = shim("status", run_id.strip(), *target, "--watch")
    assert code == 0
    assert "Summary: 1 complete" in out
    assert out.startswith("[########################] 100%  1/1 finished, 0 running, 0 queued")


@pytest.mark.shim_real_redis  # shim submit refuses the embedded store
def test_status_of_a_finished_failed_run_exits_1(
    shim: Shim,
    target: list[str],
    plan_file: Callable[..., str],
    threads: Callable[[int], Fleet],
) -> None:
    """``shim status RUN`` exits as ``shim run`` of the same run did: 1 when it failed."""
    task = {"id": "bad", "executor": "sim", "max_attempts": 1, "params": {"fail_first": 5}}
    _, run_id, _ = shim("submit", plan_file({"tasks": [task]}), *target)
    threads(1)
    code, out, _ = shim("status", run_id.strip(), *target, "--watch")
    assert code == 1
    assert "1 failed" in out


@pytest.mark.shim_real_redis
def test_submit_wait_with_a_shim_worker_process(
    shim: Shim,
    target: list[str],
    plan_file: Callable[..., str],
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
) -> None:
    """``submit --wait`` returns the report once a ``shim worker`` subprocess has done the
    work."""
    path = plan_file(
        {
            "defaults": {"executor": "sim"},
            "tasks": [{"id": "one"}, {"id": "two", "deps": ["one"]}],
        }
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "shim_core.cli", "worker", *target, "--heartbeat", "0.5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        registry = WorkerRegistry(shim_connection, shim_settings)
        wait_until(lambda: registry.live_worker_ids() or worker.poll() is not None, timeout=30)
        assert worker.poll() is None, "the worker process exited at start"
        code, out, err = shim("submit", path, *target, "--wait")
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert code == 0, err
    assert "Summary: 2 complete" in out
    assert worker.returncode == 0


def test_submit_refuses_the_embedded_store(shim: Shim) -> None:
    """``submit`` without a Redis URL exits 2: an embedded store has no fleet to run it."""
    code, _, err = shim("submit", AUTH)
    assert code == 2
    assert err.startswith("error: submit needs the Redis of a running fleet")


def test_cancel_run_and_task(
    shim: Shim, target: list[str], shim_queue: TaskQueue, submitted: Callable[..., str]
) -> None:
    """``cancel RUN`` cancels every unfinished task of the run, ``cancel TASK`` one task and its
    dependents, and an unknown target exits 2."""
    run_id, other = submitted(), submitted()

    code, out, _ = shim("cancel", run_id, *target)
    assert code == 0
    assert re.fullmatch(rf"cancelled \d+ task\(s\) of run {run_id}\n", out)
    tasks = [t for t in shim_queue.get_many(f"{run_id}:{i}" for i in AUTH_IDS)]
    assert {t.status for t in tasks} == {TaskStatus.CANCELLED}

    code, out, _ = shim("cancel", f"{other}:service", *target)
    assert code == 0
    assert out == f"cancelled task {other}:service and 4 dependent(s)\n"
    assert shim_queue.get(f"{other}:model").status is TaskStatus.WAITING

    code, _, err = shim("cancel", "no-such-thing", *target)
    assert code == 2
    assert err == "error: task 'no-such-thing' not found\n"


@pytest.mark.parametrize(
    "change",
    [
        ("cost_usd", "oops", "cost_usd is not a number: 'oops'"),
        ("task_ids", "[not json", "Expecting value"),
    ],
)
def test_status_of_a_run_whose_record_was_changed_by_hand_says_so_in_one_line(
    shim: Shim,
    target: list[str],
    shim_queue: TaskQueue,
    submitted: Callable[..., str],
    change: tuple[str, str, str],
) -> None:
    """Data read from Redis is untrusted: a run record that does not decode is an error that
    names the run and the field, not a traceback."""
    field, value, why = change
    run_id = submitted()
    shim_queue.client.hset(shim_queue.keys.run(run_id), field, value)
    code, _, err = shim("status", run_id, *target)
    assert code == 2
    assert err.startswith(f"error: run {run_id!r} has a corrupt record: {why}")
    assert "Traceback" not in err
    shim_queue.client.hdel(shim_queue.keys.run(run_id), "created_at")
    code, _, err = shim("status", run_id, *target)
    assert err == f"error: run {run_id!r} has a corrupt record: no created_at field\n"


def test_cancel_run_reports_how_many_tasks_it_cancelled(
    shim: Shim, target: list[str], submitted: Callable[..., str]
) -> None:
    """``cancel RUN`` prints the number of tasks it cancelled (all 8 of the auth plan)."""
    run_id = submitted()
    _, out, _ = shim("cancel", run_id, *target)
    assert out == f"cancelled 8 task(s) of run {run_id}\n"


@pytest.mark.shim_real_redis
def test_retry_task_and_run(
    shim: Shim,
    target: list[str],
    plan_file: Callable[..., str],
    threads: Callable[[int], Fleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a failed run (exit 1), ``retry TASK`` and then ``retry RUN`` complete it, while
    retrying a complete task exits 2."""
    threads(2)
    monkeypatch.setenv("SHIM_SIM_FAIL_RATE", "1")  # attempts fail while this is set
    path = plan_file(
        {
            "defaults": {"executor": "sim", "max_attempts": 1},
            "tasks": [{"id": "root"}, {"id": "leaf", "deps": ["root"]}],
        }
    )
    code, out, _ = shim("submit", path, *target, "--wait", "--json")
    assert code == 1
    report = json.loads(out)
    run_id = report["run_id"]
    assert report["summary"] == {"failed": 1, "cancelled": 1}
    monkeypatch.delenv("SHIM_SIM_FAIL_RATE")

    code, out, _ = shim("retry", f"{run_id}:root", *target)
    assert (code, out) == (0, f"task {run_id}:root is pending again\n")
    wait_until(
        lambda: (
            json.loads(shim("status", run_id, *target, "--json")[1])["report"]["summary"]
            == {"complete": 1, "cancelled": 1}
        ),
        timeout=15,
    )
    code, out, _ = shim("retry", run_id, *target)
    assert (code, out) == (0, f"retrying 1 task(s) of run {run_id}\n")
    code, out, _ = shim("status", run_id, *target, "--watch")
    assert code == 0
    assert "Summary: 2 complete" in out

    code, _, err = shim("retry", f"{run_id}:root", *target)
    assert code == 2
    assert err == f"error: task '{run_id}:root' is complete\n"


@pytest.mark.shim_real_redis
def test_submit_records_the_latest_run(
    shim: Shim, target: list[str], shim_queue: TaskQueue
) -> None:
    """Each ``shim submit`` prints a new run id, recorded as the namespace's latest run."""
    _, first, _ = shim("submit", AUTH, *target)
    code, second, _ = shim("submit", AUTH, *target, "--json")
    assert code == 0
    second_id = json.loads(second)["run_id"]
    assert first.strip() != second_id
    assert latest_run_id(shim_queue) == second_id


def test_mistyped_plan_paths_are_errors_not_one_task_plans(tmp_path, monkeypatch):
    """A path that is not a readable plan file never becomes a made-up one-task plan."""
    monkeypatch.delenv("SHIM_REDIS_URL", raising=False)
    (tmp_path / "plan.yaml").write_text("tasks:\n  - id: a\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a plan\n", encoding="utf-8")
    cases = {
        str(tmp_path / "plan"): "did you mean",
        str(tmp_path): "is a directory",
        str(tmp_path / "notes.txt"): "plan files are .yaml, .yml or .json",
        str(tmp_path / "missing.yaml"): "no such plan file",
    }
    for request, message in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "shim_core.cli", "run", request, "--yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (request, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_no_workers_on_the_embedded_store_is_refused(monkeypatch):
    monkeypatch.delenv("SHIM_REDIS_URL", raising=False)
    done = subprocess.run(
        [sys.executable, "-m", "shim_core.cli", "run", "examples/auth_system.yaml", "--yes",
         "--workers", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--workers 0 on the embedded store would wait for ever" in done.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a private redis-server")
@pytest.mark.usefixtures("terminal_sigint")
def test_ctrl_c_cancels_the_run_and_exits_130_quietly(monkeypatch):
    """Ctrl-C in a terminal signals the whole foreground process group: the private
    redis-server must not be in it, or it dies under the run and every thread fails."""
    import signal
    import time

    monkeypatch.delenv("SHIM_REDIS_URL", raising=False)
    command = [sys.executable, "-m", "shim_core.cli", "run", "examples/auth_system.yaml", "--yes"]
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    ) as run:  # fmt: skip
        assert run.stderr is not None
        for line in run.stderr:  # the first task has started: seven are left to interrupt
            if line.lstrip().startswith("running "):
                break
        os.killpg(run.pid, signal.SIGINT)
        started = time.monotonic()
        rest = run.stderr.read()
        code = run.wait(timeout=30)
    assert code == 130, rest
    assert time.monotonic() - started < 10
    assert "interrupted: run" in rest
    assert "Traceback" not in rest


def test_declining_the_prompt_in_a_terminal_exits_1_with_nothing_queued(monkeypatch):
    """In a terminal, ``shim run`` shows the plan and asks; "n" queues nothing and exits 1
    (the run did not happen), not 130 (nothing was interrupted)."""
    import pty

    monkeypatch.delenv("SHIM_REDIS_URL", raising=False)
    command = [sys.executable, "-m", "shim_core.cli", "run", "examples/auth_system.yaml"]
    leader, follower = pty.openpty()
    with subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, cwd=ROOT
    ) as run:
        os.close(follower)
        seen = b""
        while b"Run this plan?" not in seen:
            chunk = os.read(leader, 4096)
            assert chunk, seen
            seen += chunk
        os.write(leader, b"n\n")
        try:
            while chunk := os.read(leader, 4096):
                seen += chunk
        except OSError:  # the terminal closed with the process
            pass
        code = run.wait(timeout=30)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert code == 1, text
    assert "not started: nothing was queued" in text
    assert "Traceback" not in text


def test_a_shell_tasks_workdir_keeps_what_it_wrote(shim: Shim, plan_file, tmp_path: Path) -> None:
    """With ``workdir`` (relative to the plan file, made if missing) the files a shell task
    writes are still there after the run; without it they went with a temporary folder."""
    command = "echo hello > out.txt"
    path = plan_file(
        {
            "tasks": [
                {"id": "w", "executor": "shell", "params": {"command": command}, "workdir": "o"}
            ]
        }
    )
    code, _, err = shim("run", path, "--yes")
    assert code == 0, err
    assert (tmp_path / "o" / "out.txt").read_text() == "hello\n"
