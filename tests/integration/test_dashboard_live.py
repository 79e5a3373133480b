"""The dashboard's live hub and data reads at their edges: a page that falls behind, a Redis
that goes away under the pages and the hub, records and tasks that vanished or do not decode."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from shim_core import Task
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard.api import _status_of
from shim_core.dashboard.live import (
    BACKLOG,
    RETRY,
    Hub,
    View,
    page_stream,
    with_socket_timeout,
)
from shim_core.dashboard.state import DashboardState
from shim_core.errors import ConnectionFailed, ShimError
from shim_core.models import WorkerRegistration
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from tests.dashboard_support import serving, sim_plan, strict_json, submit

pytestmark = pytest.mark.shim_real_redis


def _kinds(chunks: list[bytes]) -> list[str]:
    """The event kinds of a page's messages (``id`` alone: a message that only moves its id)."""
    kinds = []
    for chunk in chunks:
        lines = chunk.decode().splitlines()
        kind = next((line[7:] for line in lines if line.startswith("event: ")), None)
        kinds.append(kind or ("id" if lines and lines[0].startswith("id: ") else "retry"))
    return kinds


def test_a_page_that_falls_behind_catches_up_from_the_history(
    shim_connection, shim_settings, shim_queue
):
    """A page whose queue overflowed is sent the events it missed, read from the history, and
    a tick; once those are no longer all in the history, a fresh snapshot. Closing the hub ends
    every page's stream."""
    hub = Hub(DashboardState.open(shim_connection, shim_settings))

    async def overflow(page: Any, messages: int) -> list[bytes]:
        for _ in range(BACKLOG + 1):
            hub._publish(("tick", "", {}))
        with anyio.fail_after(5):
            return [await page.__anext__() for _ in range(messages)]

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
        _event(shim_queue, "seen")  # the page starts from a history entry
        page = page_stream(hub, View(), None)
        start = [await page.__anext__(), await page.__anext__()]
        _event(shim_queue, "missed")
        caught_up = await overflow(page, 2)
        shim_connection.get_client().xtrim(shim_queue.keys.events(), maxlen=0)
        _event(shim_queue, "after-a-trim")
        fresh = await overflow(page, 1)
        hub.close()
        return start, caught_up, fresh, [chunk async for chunk in page]

    start, caught_up, fresh, rest = anyio.run(scenario)
    assert start[0] == RETRY
    assert _kinds(start) == ["retry", "snapshot"]
    assert _kinds(caught_up) == ["events", "tick"]
    assert b'"task":"missed"' in caught_up[0]
    assert _kinds(fresh) == ["snapshot"]
    assert rest == []


def _event(queue: TaskQueue, task_id: str) -> None:
    """An entry in the history: a task added, then cancelled."""
    queue.add(Task(id=task_id))
    queue.cancel(task_id)


def test_pages_and_the_hub_outlive_redis_being_away(shim_redis_server_factory):
    """With Redis away a page is told so and its stream ends (the browser reconnects), also
    one that falls behind meanwhile: never a `failure`, which a page takes as final. The hub
    keeps trying, follows the history again once Redis is back, and stops at once either way."""
    server = shim_redis_server_factory()
    settings = Settings(redis_url=server.url, namespace="away")
    connection = RedisConnectionManager(server.url, retries=0)
    connection.connect()
    hub = Hub(DashboardState.open(connection, settings), tick_s=30)
    hub.retry_s = 0.05

    async def drained(page: Any) -> list[bytes]:
        return [chunk async for chunk in page]

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        await hub.start()
        page = page_stream(hub, View(), None)
        seen["start"] = [await page.__anext__(), await page.__anext__()]
        server.kill()
        for _ in range(BACKLOG + 1):
            hub._publish(("tick", "", {}))
        seen["lagging"] = await drained(page)
        seen["new"] = await drained(page_stream(hub, View(run="some-run"), None))
        await anyio.sleep(0.1)
        seen["following"] = hub.running
        server.start()
        page = page_stream(hub, View(), None)
        seen["back"] = [await page.__anext__(), await page.__anext__()]
        writer = RedisConnectionManager(server.url)
        _event(TaskQueue(writer, settings), "back")
        writer.disconnect()
        with anyio.fail_after(5):
            seen["event"] = await page.__anext__()
        await page.aclose()
        began = time.monotonic()
        await anyio.to_thread.run_sync(hub.stop)
        seen["stop_s"] = time.monotonic() - began
        return seen

    try:
        seen = anyio.run(scenario)
    finally:
        connection.disconnect()
    assert _kinds(seen["start"]) == ["retry", "snapshot"]
    for ended in (seen["lagging"], seen["new"][1:]):
        assert _kinds(ended) == ["unavailable"]
        assert "unreachable" in strict_json(ended[0].decode().split("data: ", 1)[1])["error"]
    assert seen["following"]
    assert _kinds(seen["back"]) == ["retry", "snapshot"]
    assert b'"task":"back"' in seen["event"]
    assert seen["stop_s"] < 1.0
    assert not hub.running
    # The hub's own client times its reads out (a partition ends a read, never hangs it).
    assert with_socket_timeout(server.url, 10) == f"{server.url}?socket_timeout=10"
    kept = with_socket_timeout("redis://:p@w@h:1/0?db=0&socket_timeout=60", 10)
    assert kept == "redis://:p@w@h:1/0?db=0&socket_timeout=60"


def test_vanished_records_and_tasks_are_left_out_or_counted(
    shim_settings, shim_queue, shim_connection, tmp_path
):
    """A run record removed meanwhile drops out of the runs list; a task removed by clean
    counts as still to do in its run's totals."""
    kept = submit(shim_settings, sim_plan("kept", 2), tmp_path)
    gone = submit(shim_settings, sim_plan("gone", 1), tmp_path)
    client = shim_connection.get_client()
    client.delete(shim_queue.keys.run(gone.run_id))
    client.delete(shim_queue.keys.task(kept.task_ids[1]))
    state = DashboardState.open(shim_connection, shim_settings)
    (summary,) = state.runs()
    assert summary["run_id"] == kept.run_id
    assert summary["counts"] == {"pending": 1}
    assert summary["total"] == 2


def test_corrupt_data_is_refused_one_item_at_a_time(
    shim_settings, shim_queue, shim_connection, tmp_path
):
    """A task that does not decode is counted and drawn as corrupt (its run and the others
    still shown); a run record that does not decode is listed with its error, and its page told
    so; numbers that are not finite never reach a page (strict JSON); an unexpected error is a
    one-line JSON 500."""
    sick = submit(shim_settings, sim_plan("sick", 3), tmp_path)
    odd = submit(shim_settings, sim_plan("odd", 1), tmp_path)
    broken = submit(shim_settings, sim_plan("broken", 1), tmp_path)
    client = shim_connection.get_client()
    keys = shim_queue.keys
    client.hset(keys.task(sick.task_ids[1]), "status", "bogus")
    client.hset(keys.run(odd.run_id), mapping={"cost_usd": "nan", "budget_usd": "inf"})
    client.hset(keys.run(broken.run_id), "task_ids", "not json")
    with serving(shim_settings) as dash:
        runs = {r["run_id"]: r for r in dash.call("api/runs").json()["runs"]}
        assert runs[sick.run_id]["counts"] == {"pending": 2, "corrupt": 1}
        assert runs[sick.run_id]["total"] == 3
        assert (runs[odd.run_id]["cost_usd"], runs[odd.run_id]["budget_usd"]) == (0, None)
        assert "corrupt record" in runs[broken.run_id]["error"]
        rows = dash.call(f"api/runs/{sick.run_id}").json()["tasks"]
        assert {r["id"]: r["status"] for r in rows} == {
            "t0": "pending",
            "t1": "corrupt",
            "t2": "pending",
        }
        assert dash.call(f"api/runs/{broken.run_id}").status == 400
        for path in ("api/live", f"api/live?run={odd.run_id}", f"api/live?run={broken.run_id}"):
            page = dash.stream(path)
            first = page.next()  # parsed strictly
            page.close()
            assert first.event == ("failure" if broken.run_id in path else "snapshot")
        registry = WorkerRegistry(shim_connection, shim_settings)
        registry.register_worker(WorkerRegistration(id="w-good"))
        registry.register_worker(WorkerRegistration(id="w-bad"))
        client.hset(keys.worker("w-bad"), "tasks_completed", "many")
        listed = dash.call("api/workers")  # a worker record that does not decode is left out
        assert listed.status == 200
        assert [w["id"] for w in listed.json()["workers"]] == ["w-good"]
    assert _status_of(ConnectionFailed("down")) == 503
    assert _status_of(ShimError("bad")) == 400


def test_an_agent_task_without_a_result_shows_its_branch_from_its_run(shim_settings, shim_queue):
    """Before it has a result, an agent task in a worktree shows the branch it works on (none
    when its id cannot name a branch)."""
    context: Any = {"workspace": "worktree"}
    for task_id in ("r1:login", "r1:a..b"):
        shim_queue.add(Task(id=task_id, executor="agent", params={"agent": "claude"}, run_id="r1"))
        shim_queue.update(task_id, context=Task(context=_context(context)).context)
    with serving(shim_settings) as dash:
        assert dash.call("api/tasks/r1:login").json()["agent"]["branch"] == "shim/r1/login"
        assert dash.call("api/tasks/r1:a..b").json()["agent"]["branch"] is None
        assert dash.call("api/state", headers={"Host": f"[::1]:{dash.port}"}).status == 200


def _context(fields: dict[str, Any]) -> Any:
    from shim_core.models import TaskContext

    return TaskContext(**fields)


def test_an_unexpected_error_is_a_one_line_json_500(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that fails in a way nobody planned answers a JSON 500 and logs the trace;
    the page never gets a traceback."""
    from starlette.requests import Request

    from shim_core.dashboard.api import _route

    def broken(_state: Any, _request: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    route = _route(None, "/api/x", broken, "GET")  # type: ignore[arg-type]
    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": [],
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 8765)}  # fmt: skip
    reply = route.endpoint(Request(scope))  # type: ignore[call-arg]
    assert reply.status_code == 500
    assert json.loads(bytes(reply.body)) == {"error": "internal error (see the dashboard's log)"}
    assert "GET /api/x failed" in caplog.text
