"""The dashboard's live hub and data reads at their edges: a page that falls behind, a hub whose
Redis is away, records and tasks that vanished, and routes a deployment may lack."""

from __future__ import annotations

import sys
import types
from typing import Any

import anyio
import pytest

from shim_core import Task
from shim_core.dashboard.api import _status_of
from shim_core.dashboard.app import metrics_route
from shim_core.dashboard.live import BACKLOG, RETRY, Hub, View, page_stream
from shim_core.dashboard.state import DashboardState
from shim_core.errors import ConnectionFailed, ShimError
from tests.dashboard_support import serving, sim_plan, submit

pytestmark = pytest.mark.shim_real_redis


def test_a_page_that_falls_behind_gets_a_fresh_snapshot(shim_connection, shim_settings):
    """A page whose queue overflowed is sent a new snapshot instead of the messages it lost,
    and closing the hub ends every page's stream."""
    hub = Hub(DashboardState.open(shim_connection, shim_settings))

    async def scenario() -> list[bytes]:
        stream = page_stream(hub, View(), None)
        got = [await stream.__anext__(), await stream.__anext__()]
        for _ in range(BACKLOG + 1):
            hub._publish(("tick", "", {}))
        got.append(await stream.__anext__())
        hub.close()
        got += [chunk async for chunk in stream]
        return got

    retry, first, again, *rest = anyio.run(scenario)
    assert retry == RETRY
    assert b"event: snapshot" in first
    assert b"event: snapshot" in again
    assert rest == []


class _Away:
    """A state whose every read fails as when Redis is unreachable."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any) -> Any:
        raise ConnectionFailed("cannot reach Redis")


def test_the_hub_outlives_redis_being_away():
    """While Redis is away the hub keeps trying (no tick, no events) instead of dying."""
    hub = Hub(_Away(), tick_s=0.05)  # type: ignore[arg-type]

    async def scenario() -> None:
        with anyio.move_on_after(0.3):
            await hub.run()

    anyio.run(scenario)


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


def test_errors_map_to_statuses_and_a_missing_metrics_module_is_said(
    shim_connection, shim_settings, monkeypatch
):
    """Redis away is 503 and other refusals 400; without shim_core.metrics (or its app),
    /metrics answers 404 saying so."""
    assert _status_of(ConnectionFailed("down")) == 503
    assert _status_of(ShimError("bad")) == 400
    for module in (None, types.ModuleType("shim_core.metrics")):
        monkeypatch.setitem(sys.modules, "shim_core.metrics", module)
        route: Any = metrics_route(shim_connection, shim_settings)
        response = route.endpoint(None)
        assert response.status_code == 404
        assert b"not available" in response.body
