"""The dashboard's HTTP API and live stream, against a real uvicorn server on an ephemeral
loopback port and a real Redis: what each route shows, who may call it, what the actions do, and
how a page follows the event history."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shim_core import Task, TaskResult
from shim_core.checkpoints import CheckpointStore
from shim_core.cli import main
from shim_core.dashboard import TOKEN_ENV, DashboardServer, check_binding, create_app, listen
from shim_core.dashboard.guard import cookie_name, cookie_value, is_loopback
from shim_core.dashboard.state import DashboardState
from shim_core.errors import ConfigError, TaskNotFound
from shim_core.history import EventLog
from shim_core.models import WorkerRegistration
from shim_core.plugins import Plugins
from shim_core.registry import WorkerRegistry
from tests.dashboard_support import serving, sim_plan, submit
from tests.helpers import wait_until

pytestmark = pytest.mark.shim_real_redis

STATIC = Path(__file__).parents[2] / "shim_core" / "dashboard" / "static"
TOKEN = "s3cret-token-0123456789"


def _claim(queue: Any, task_id: str) -> int:
    """Claim ``task_id`` (and only it) as worker ``tester``; returns the lease token."""
    queue.reassign(task_id, "tester")
    (claim,) = queue.claim([], worker_id="tester", count=1)
    assert claim.task.id == task_id
    return int(claim.token)


def test_runs_and_a_run_show_totals_waves_and_tasks(shim_settings, shim_queue, tmp_path):
    """The runs list and one run show what was submitted: totals by status, no ETA without a
    live worker, waves of plan ids and a row per task with its dependencies."""
    record = submit(shim_settings, sim_plan("three-waves", 7), tmp_path)
    with serving(shim_settings) as dash:
        state = dash.call("api/state").json()
        assert state["namespace"] == shim_settings.namespace
        assert state["workers"] == []
        assert state["paused"] is False
        (summary,) = state["runs"]
        assert summary["run_id"] == record.run_id
        assert summary["name"] == "three-waves"
        assert summary["total"] == 7
        assert summary["counts"] == {"pending": 3, "waiting": 4}
        assert summary["eta_s"] is None
        assert not summary["finished"]
        assert (summary["finished_tasks"], summary["running_tasks"], summary["queued_tasks"]) == (
            0,
            0,
            7,
        )
        assert dash.call("api/runs?limit=x").json()["runs"] == [summary]
        run = dash.call(f"api/runs/{record.run_id}").json()
        assert run["waves"] == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
        rows = {row["id"]: row for row in run["tasks"]}
        assert rows["t6"]["deps"] == ["t3"]
        assert rows["t6"]["wave"] == 2
        assert rows["t0"]["status"] == "pending"
        assert rows["t6"]["status"] == "waiting"
        assert dash.call(f"api/runs/{record.run_id}/summary").json()["total"] == 7
        missing = dash.call("api/runs/nosuchrun")
        assert missing.status == 404
        assert missing.json() == {"error": "run 'nosuchrun' not found"}


def test_a_finished_run_has_a_duration_cost_and_no_eta(shim_settings, shim_queue, tmp_path):
    """A run whose tasks all completed is finished and ok, with each task's worker, attempts,
    start and end, and the cost its agents reported."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "start",
        ],
        check=True,
    )
    plan = {
        "name": "done",
        "repo": str(repo),
        "tasks": [{"id": "a", "executor": "agent", "params": {"agent": "claude"}}],
    }
    record = submit(shim_settings, plan, tmp_path)
    task_id = record.task_ids[0]
    token = _claim(shim_queue, task_id)
    shim_queue.complete(task_id, token, TaskResult(success=True, output="ok", cost_usd=0.25))
    with serving(shim_settings) as dash:
        run = dash.call(f"api/runs/{record.run_id}").json()
    assert run["summary"]["finished"]
    assert run["summary"]["ok"]
    assert run["summary"]["eta_s"] == 0
    assert run["summary"]["cost_usd"] == 0.25
    assert run["summary"]["finished_tasks"] == 1
    (row,) = run["tasks"]
    assert row["worker"] == "tester"
    assert row["attempts"] == 1
    assert row["cost_usd"] == 0.25
    assert row["finished_at"] >= row["started_at"]
    assert row["progress"] == 1.0


def test_a_token_is_needed_for_every_request_and_sets_a_cookie_once(shim_settings, shim_queue):
    """With a token, requests without it are refused; the Bearer header or the HttpOnly cookie
    that `/?token=` sets lets them through, and a wrong token never does. The cookie holds an
    HMAC of the token, is named after the port, is Secure over https, and is found among any
    other cookies of the host."""
    with serving(shim_settings, token=TOKEN) as dash:
        for path in ("", "api/state", "static/app.js", "api/live", "metrics"):
            refused = dash.call(path)
            assert refused.status == 401
            assert "\n" not in refused.body.strip()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert dash.call("api/state", headers=bearer).status == 200
        assert dash.call("api/state", headers={"Authorization": "Bearer wrong"}).status == 401
        assert dash.call("?token=wrong").status == 401
        login = dash.call(f"?token={TOKEN}&x=1")
        assert login.status == 303
        assert login.headers["location"] == "/?x=1"
        mine = f"{cookie_name(dash.port)}={cookie_value(TOKEN)}"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(mine + ";")
        assert TOKEN not in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "secure" not in cookie.lower()
        proxied = dash.call(f"?token={TOKEN}", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in proxied.headers["set-cookie"]
        with_cookie = {"Cookie": f'prefs={{"theme":"dark"}}; note="a b"; {mine}'}
        assert dash.call("", headers=with_cookie).status == 200
        assert dash.call("api/pause", "POST", headers=with_cookie).json() == {"paused": True}
        for wrong in (
            f"{cookie_name(dash.port)}={TOKEN}",  # the token itself is not the cookie
            f"{cookie_name(dash.port + 1)}={cookie_value(TOKEN)}",  # another port's
        ):
            assert dash.call("api/state", headers={"Cookie": wrong}).status == 401
        unmarked = dash.call("api/resume", "POST", headers={**bearer, "X-Shim-Action": ""})
        assert unmarked.status == 403
    assert shim_queue.is_paused()


def test_without_a_token_only_loopback_requests_and_marked_actions_pass(shim_settings, shim_queue):
    """Without a token the dashboard answers only requests addressed to loopback names, takes
    actions only with the X-Shim-Action header, and refuses whatever another site sends (but a
    link that opens the page); every response is for its own origin only."""
    with serving(shim_settings) as dash:
        assert dash.call("api/state", headers={"Host": "evil.example:8765"}).status == 421
        assert dash.call("api/state", headers={"Host": f"localhost:{dash.port}"}).status == 200
        assert dash.call("api/pause", "POST", headers={"X-Shim-Action": ""}).status == 403
        foreign = {"Origin": "http://evil.example"}
        assert dash.call("api/pause", "POST", headers=foreign).status == 403
        assert dash.call("api/state", headers=foreign).status == 403
        own = {"Origin": f"http://127.0.0.1:{dash.port}"}
        assert dash.call("api/state", headers=own).status == 200
        for site in ("cross-site", "same-site"):
            for path in ("api/state", "api/live", "static/app.js", "metrics", ""):
                assert dash.call(path, headers={"Sec-Fetch-Site": site}).status == 403
        for site in ("same-origin", "none"):
            assert dash.call("api/state", headers={"Sec-Fetch-Site": site}).status == 200
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
        link["Sec-Fetch-Dest"] = "document"
        assert dash.call("", headers=link).status == 200
        assert dash.call("api/state", headers=link).status == 403
        page = dash.call("")
        assert page.status == 200
        assert "<title>SHIM dashboard</title>" in page.body
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cross-origin-resource-policy"] == "same-origin"
    assert not shim_queue.is_paused()


def test_serving_beyond_loopback_needs_a_token(shim_settings, shim_connection, capsys, monkeypatch):
    """Any address but loopback is refused without a token, also when the server is given a
    socket bound to all addresses; a token must have 16 characters or more; each refusal is one
    line and exit 2, and never shows the token."""
    assert is_loopback("127.0.0.2")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.org")
    with pytest.raises(ConfigError, match="SHIM_DASHBOARD_TOKEN"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", TOKEN)
    for refused in (
        lambda: check_binding("127.0.0.1", "short-token"),
        lambda: create_app(shim_connection, shim_settings, token="short-token"),
    ):
        with pytest.raises(ConfigError, match="at least 16 characters") as short:
            refused()
        assert "short-token" not in str(short.value)
    everywhere = listen("0.0.0.0", 0)
    try:
        with pytest.raises(ConfigError, match="SHIM_DASHBOARD_TOKEN"):
            DashboardServer(shim_connection, shim_settings, everywhere)
    finally:
        everywhere.close()
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    taken = listen("127.0.0.1", 0)
    try:
        for env, args in (
            (None, ["--host", "0.0.0.0", "--redis", shim_settings.redis_url]),
            (None, ["--redis", "embedded://"]),
            (None, ["--redis", shim_settings.redis_url, "--port", str(taken.getsockname()[1])]),
            ("short-token", ["--redis", shim_settings.redis_url]),
        ):
            if env:
                monkeypatch.setenv(TOKEN_ENV, env)
            with pytest.raises(SystemExit) as stop:
                main(["dashboard", *args])
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ")
            assert err.count("\n") == 1
            assert "short-token" not in err
    finally:
        taken.close()


def test_actions_cancel_retry_pause_and_resume(shim_settings, shim_queue, tmp_path):
    """Each action does what `shim cancel`, `shim retry`, `shim pause` and `shim resume` do,
    and a refused one answers with its reason."""
    record = submit(shim_settings, sim_plan("acts", 4), tmp_path)
    first, _, _, last = record.task_ids
    with serving(shim_settings) as dash:
        assert dash.call("api/pause", "POST").json() == {"paused": True}
        assert dash.call("api/state").json()["paused"] is True
        assert dash.call("api/resume", "POST").json() == {"paused": False}
        cancelled = dash.call(f"api/tasks/{first}/cancel", "POST").json()
        assert cancelled == {"task": first, "dependents": 1}  # t3
        assert dash.call(f"api/tasks/{first}/retry", "POST").json()["status"] == "pending"
        again = dash.call(f"api/tasks/{first}/retry", "POST")
        assert again.status == 409
        assert "pending" in again.json()["error"]
        assert dash.call(f"api/runs/{record.run_id}/cancel", "POST").json()["cancelled"] == 3
        retried = dash.call(f"api/runs/{record.run_id}/retry", "POST").json()["retried"]
        assert retried == [record.task_ids[i] for i in (0, 1, 2, 3)]
        assert dash.call("api/tasks/nope/retry", "POST").status == 404
        assert dash.call("api/runs/nope/cancel", "POST").status == 404
        assert dash.call(f"api/tasks/{last}").json()["status"] == "waiting"
    assert not shim_queue.is_paused()


def test_a_task_page_has_log_checkpoint_dependencies_result_and_history(
    shim_settings, shim_queue, shim_connection, tmp_path
):
    """One task's page data: its log tail, latest checkpoint, its dependency's result, its own
    error, and its events from the history (attempts)."""
    record = submit(shim_settings, sim_plan("detail", 4, max_attempts=1), tmp_path)
    dep, child = record.task_ids[0], record.task_ids[3]
    token = _claim(shim_queue, dep)
    shim_queue.complete(dep, token, TaskResult(success=True, output={"summary": "schema done"}))
    token = _claim(shim_queue, child)
    shim_queue.append_log(child, ["line 1", "line 2"], keep=10)
    backend = Plugins().backends["redis"].create(shim_connection, shim_settings)
    CheckpointStore(backend, shim_queue).save(child, token, {"step": 3}, progress=0.5, attempt=1)
    shim_queue.fail(child, token, "it broke")
    with serving(shim_settings) as dash:
        task = dash.call(f"api/tasks/{child}").json()
        history = dash.call(f"api/tasks/{child}/history").json()["events"]
        assert dash.call(f"api/tasks/{child}/log").json() == {"log": ["line 1", "line 2"]}
        assert dash.call("api/tasks/nosuchtask").status == 404
    assert task["status"] == "failed"
    assert task["result"]["error"] == "it broke"
    assert task["log"] == ["line 1", "line 2"]
    assert task["agent"] is None
    assert task["checkpoint"]["state"] == {"step": 3}
    assert task["checkpoint"]["progress"] == 0.5
    (dependency,) = task["dependencies"]
    assert dependency["status"] == "complete"
    assert dependency["result"]["output"] == {"summary": "schema done"}
    assert [e["type"] for e in history][-1] == "failed"
    assert {e["worker"] for e in history if "worker" in e} == {"tester"}


def test_an_agent_task_shows_branch_session_summary_and_files(shim_settings, shim_queue):
    """An agent task's page shows the branch, session id, summary and files its result holds."""
    shim_queue.add(Task(id="solo", executor="agent", params={"agent": "claude"}))
    token = _claim(shim_queue, "solo")
    output = {"agent": "claude", "session_id": "sess-1", "summary": "did it", "branch": "shim/x"}
    result = TaskResult(success=True, output=output, files_modified=("a.py",), cost_usd=0.5)
    shim_queue.complete("solo", token, result)
    with serving(shim_settings) as dash:
        agent = dash.call("api/tasks/solo").json()["agent"]
        history = dash.call("api/tasks/solo/history").json()["events"]
    assert [e["type"] for e in history][-1] == "completed"  # a task outside any run too
    assert agent["branch"] == "shim/x"
    assert agent["session_id"] == "sess-1"
    assert agent["summary"] == "did it"
    assert agent["files_changed"] == ["a.py"]


def test_a_task_history_is_read_from_its_creation_on(shim_settings, shim_queue, shim_connection):
    """A task's history is read from its creation on (stream ids carry the server's clock, as
    its created_at does), not from the start of the history: a task added again after `shim
    clean` shows none of its predecessor's events."""
    state = DashboardState.open(shim_connection, shim_settings)
    task = Task(id="r9:again", type="manual", max_attempts=1, run_id="r9")
    shim_queue.add(task)
    (claim,) = shim_queue.claim(["manual"], worker_id="first")
    shim_queue.fail(task.id, claim.token, "old failure")
    shim_queue.clean(grace_ms=0)
    time.sleep(0.005)  # the next ms of the server's clock
    shim_queue.add(task)
    shim_queue.claim(["manual"], worker_id="second")
    history = state.task_history(task.id)
    assert {e.get("worker") for e in history} == {"second"}
    assert "failed" not in {e["type"] for e in history}
    with pytest.raises(TaskNotFound):
        state.task_history("r9:nosuchtask")


def test_hostile_titles_are_only_ever_data(shim_settings, shim_queue, tmp_path):
    """A task title full of markup comes back verbatim as JSON, the page's scripts never turn
    data into HTML, and every response forbids inline scripts."""
    hostile = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'
    plan = {"name": "<b>run</b>", "tasks": [{"id": "evil", "title": hostile, "executor": "sim"}]}
    record = submit(shim_settings, plan, tmp_path)
    with serving(shim_settings) as dash:
        reply = dash.call(f"api/runs/{record.run_id}")
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["tasks"][0]["title"] == hostile
        assert "script-src" not in reply.headers["content-security-policy"]  # 'self' only
    for script in ("app.js", "dag.js"):
        source = (STATIC / script).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source


def test_the_live_stream_sends_a_snapshot_then_the_events_after_it(
    shim_settings, shim_queue, shim_connection, tmp_path
):
    """A page gets a snapshot whose id is the history entry it was read at, then each
    transition made through the queue; reconnecting with Last-Event-ID replays what it missed,
    and an id the history no longer holds gets a fresh snapshot."""
    record = submit(shim_settings, sim_plan("live", 2), tmp_path)
    other = submit(shim_settings, sim_plan("other", 1), tmp_path)
    log = EventLog(shim_connection, shim_settings)
    _claim(shim_queue, other.task_ids[0])  # another run: not sent to this page
    with serving(shim_settings) as dash:
        assert dash.server.hub.cursor == log.last_id()  # read before the first request
        page = dash.stream(f"api/live?run={record.run_id}")
        snapshot = page.next_of("snapshot")
        assert snapshot.id == log.last_id() != "0-0"
        assert [t["id"] for t in snapshot.data["run"]["tasks"]] == ["t0", "t1"]
        shim_queue.cancel(other.task_ids[0])  # nor this
        token = _claim(shim_queue, record.task_ids[0])
        shim_queue.complete(record.task_ids[0], token, TaskResult(success=True, duration_ms=5))
        seen: list[dict[str, Any]] = []
        while not any(e.get("status") == "complete" for e in seen):
            message = page.next_of("events")
            seen += message.data
        assert {e["task"] for e in seen} == {record.task_ids[0]}
        assert seen[-1]["duration_ms"] == 5
        assert seen[-1]["worker"] == "tester"
        page.close()

        resumed = dash.stream(f"api/live?run={record.run_id}", {"Last-Event-ID": snapshot.id})
        replay = resumed.next()
        assert replay.event == "events"
        assert replay.id == message.id
        assert [e["status"] for e in replay.data][-1] == "complete"
        assert resumed.next().event == "tick"  # the workers, which events may have moved
        resumed.close()
        for stale in ("1-0", "99999999999999-0", "garbage"):
            fresh = dash.stream("api/live", {"Last-Event-ID": stale})
            assert fresh.next().event == "snapshot"
            fresh.close()
        unknown = dash.stream("api/live?run=nosuchrun")
        assert unknown.next().data == {"error": "run 'nosuchrun' not found"}
        unknown.close()
        task_page = dash.stream(f"api/live?task={record.task_ids[0]}")
        light = task_page.next_of("snapshot").data
        assert "run" not in light
        assert "runs" not in light
        assert [e["type"] for e in light["history"]][-1] == "completed"
        assert (
            light["history"]
            == dash.call(f"api/tasks/{record.task_ids[0]}/history").json()["events"]
        )
        task_page.close()
        unknown = dash.stream("api/live?task=nosuchtask")
        assert unknown.next().data == {"error": "task 'nosuchtask' not found"}
        unknown.close()


def test_ticks_carry_the_workers_and_metrics_are_served(shim_settings, shim_connection):
    """A worker joining is followed within a second by a tick with the fleet (status, current
    tasks, heartbeat age), and /metrics answers in the Prometheus text format."""
    registry = WorkerRegistry(shim_connection, shim_settings)
    with serving(shim_settings) as dash:
        page = dash.stream("api/live")
        assert page.next_of("snapshot").data["runs"] == []
        registry.register_worker(WorkerRegistration(id="w-tick", name="ticker"))
        tick = page.next_of("tick").data
        (worker,) = tick["workers"]
        assert worker["id"] == "w-tick"
        assert worker["name"] == "ticker"
        assert worker["status"] == "idle"
        assert worker["age_s"] is not None
        assert not worker["gone"]
        page.close()
        metrics = dash.call("metrics")
        assert metrics.status == 200
        assert "shim_" in metrics.body
        assert dash.call("api/workers").json()["workers"][0]["id"] == "w-tick"


@pytest.mark.usefixtures("terminal_sigint")
def test_shim_dashboard_serves_until_interrupted(shim_settings, capsys, monkeypatch):
    """`shim dashboard` says where it serves, answers there, and Ctrl-C stops it (exit 130) at
    once, with a page open: every thread it started has ended when it returns (none is left
    blocked on Redis, which would hold the process's exit).

    The shutdown grace is raised to 30 s, so a live stream left open would hold the stop for
    that long: the 10 s bound catches it, and a slow machine stays well inside it."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr("shim_core.dashboard.server.SHUTDOWN_GRACE_S", 30)
    probe = listen("127.0.0.1", 0)
    port = probe.getsockname()[1]
    probe.close()
    interrupted: list[float] = []

    def interrupt_once_up() -> None:
        url = f"http://127.0.0.1:{port}/api/state"
        wait_until(lambda: _answers(url), timeout=10)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/live", timeout=5)
        page.readline()  # its stream has started
        interrupted.append(time.monotonic())
        signal.raise_signal(signal.SIGINT)
        page.close()

    before = set(threading.enumerate())
    helper = threading.Thread(target=interrupt_once_up, daemon=True)
    helper.start()
    with pytest.raises(SystemExit) as stop:
        main(["dashboard", "--redis", shim_settings.redis_url, "--port", str(port)])
    took = time.monotonic() - interrupted[0]
    helper.join(timeout=5)
    assert stop.value.code == 130
    assert took < 10
    left = [t for t in set(threading.enumerate()) - before if not _ends(t, 1.0)]
    assert not left, f"threads still running after shim dashboard returned: {left}"
    err = capsys.readouterr().err
    assert f"on http://127.0.0.1:{port}/" in err


def _ends(thread: threading.Thread, timeout: float) -> bool:
    thread.join(timeout)
    return not thread.is_alive()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
