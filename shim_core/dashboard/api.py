"""The dashboard's JSON routes: state reads (GET) and actions (POST), each a thin call into the
library the CLI uses (``shim cancel``, ``shim retry``, ``shim pause``, ``shim resume``).

Every route answers JSON; a SHIM error becomes ``{"error": "<one line>"}`` with 404 (no such run
or task), 409 (the state does not allow it), 503 (Redis unreachable) or 400, and anything else
a logged 500 with one line, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from shim_core.dashboard.encoding import JSON
from shim_core.dashboard.state import DashboardState
from shim_core.errors import ConnectionFailed, InvalidTransition, ShimError, TaskNotFound
from shim_core.supervisor.runs import RunNotFound, cancel_run, retry_run

log = logging.getLogger(__name__)

Handler = Callable[[DashboardState, Request], Any]

#: Reason recorded on tasks cancelled from the dashboard.
CANCELLED_BY_USER = "cancelled from the dashboard"


def _status_of(exc: ShimError) -> int:
    if isinstance(exc, RunNotFound | TaskNotFound):
        return 404
    if isinstance(exc, InvalidTransition):
        return 409
    if isinstance(exc, ConnectionFailed):
        return 503
    return 400


def _route(state: DashboardState, path: str, handler: Handler, method: str) -> Route:
    """A route whose handler runs in a worker thread (the library blocks on Redis)."""

    def endpoint(request: Request) -> JSON:
        try:
            return JSON(handler(state, request))
        except ShimError as exc:
            return JSON({"error": str(exc)}, status_code=_status_of(exc))
        except Exception:
            log.exception("dashboard: %s %s failed", method, request.url.path)
            return JSON({"error": "internal error (see the dashboard's log)"}, status_code=500)

    return Route(path, endpoint, methods=[method])


def _param(request: Request, name: str) -> str:
    return str(request.path_params[name])


def _limit(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("limit", "20")), 200))
    except ValueError:
        return 20


def _cancel_task(state: DashboardState, request: Request) -> dict[str, Any]:
    task_id = _param(request, "task_id")
    return {"task": task_id, "dependents": state.queue.cancel(task_id, CANCELLED_BY_USER)}


def _retry_task(state: DashboardState, request: Request) -> dict[str, Any]:
    task_id = _param(request, "task_id")
    return {"task": task_id, "status": state.queue.retry(task_id).value}


def _cancel_run(state: DashboardState, request: Request) -> dict[str, Any]:
    run_id = _param(request, "run_id")
    return {"run": run_id, "cancelled": cancel_run(state.queue, run_id, CANCELLED_BY_USER)}


def _retry_run(state: DashboardState, request: Request) -> dict[str, Any]:
    run_id = _param(request, "run_id")
    return {"run": run_id, "retried": retry_run(state.queue, run_id)}


def _pause(state: DashboardState, _request: Request) -> dict[str, Any]:
    state.queue.pause()
    return {"paused": True}


def _resume(state: DashboardState, _request: Request) -> dict[str, Any]:
    state.queue.resume()
    return {"paused": False}


def api_routes(state: DashboardState) -> list[Route]:
    """The JSON routes under ``/api``."""
    reads: list[tuple[str, Handler]] = [
        ("/api/state", lambda s, r: s.snapshot()),
        ("/api/workers", lambda s, r: {"workers": s.workers()}),
        ("/api/runs", lambda s, r: {"runs": s.runs(_limit(r))}),
        ("/api/runs/{run_id}", lambda s, r: s.run(_param(r, "run_id"))),
        ("/api/runs/{run_id}/summary", lambda s, r: s.run_summary(_param(r, "run_id"))),
        ("/api/tasks/{task_id}", lambda s, r: s.task(_param(r, "task_id"))),
        (
            "/api/tasks/{task_id}/history",
            lambda s, r: {"events": s.task_history(_param(r, "task_id"))},
        ),
        ("/api/tasks/{task_id}/log", lambda s, r: {"log": s.task_log(_param(r, "task_id"))}),
    ]
    actions: list[tuple[str, Handler]] = [
        ("/api/tasks/{task_id}/cancel", _cancel_task),
        ("/api/tasks/{task_id}/retry", _retry_task),
        ("/api/runs/{run_id}/cancel", _cancel_run),
        ("/api/runs/{run_id}/retry", _retry_run),
        ("/api/pause", _pause),
        ("/api/resume", _resume),
    ]
    return [_route(state, p, h, "GET") for p, h in reads] + [
        _route(state, p, h, "POST") for p, h in actions
    ]
