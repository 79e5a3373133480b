"""The dashboard's Starlette application: the page, its JSON routes, the live stream and
``/metrics``, behind the guard."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard.api import api_routes
from shim_core.dashboard.guard import Guard
from shim_core.dashboard.live import TICK_S, Hub, View, page_stream
from shim_core.dashboard.state import DashboardState

#: The page's HTML, scripts and styles (plain files: no build step, nothing from the network).
STATIC = Path(__file__).parent / "static"


def create_app(
    connection: RedisConnectionManager,
    settings: Settings,
    *,
    token: str | None = None,
    tick_s: float = TICK_S,
) -> Starlette:
    """The dashboard of ``settings.namespace`` over ``connection``.

    ``token`` None serves loopback requests only and asks for no token; with a token every
    request must carry it (see :mod:`shim_core.dashboard.guard`). ``tick_s`` is the most
    seconds between two updates of the workers' heartbeats on the page.
    """
    state = DashboardState.open(connection, settings)
    hub = Hub(state, tick_s)

    async def live(request: Request) -> StreamingResponse:
        query = request.query_params
        view = View(run=query.get("run") or None, task=query.get("task") or None)
        last = request.headers.get("last-event-id") or None
        return StreamingResponse(
            page_stream(hub, view, last),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(hub.run)
            yield
            group.cancel_scope.cancel()

    routes: list[BaseRoute] = [
        Route("/", lambda _request: FileResponse(STATIC / "index.html")),
        Route("/api/live", live),
        *api_routes(state),
        Mount("/static", StaticFiles(directory=STATIC)),
        metrics_route(connection, settings),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, token=token)])
    app.state.hub = hub  # the server ends the pages' streams with hub.close() when it stops
    return app


def metrics_route(connection: RedisConnectionManager, settings: Settings) -> BaseRoute:
    """``/metrics``: the Prometheus exposition of :mod:`shim_core.metrics` when that module is
    installed, else a 404 saying so."""
    app = _metrics_app(connection, settings)
    if app is None:
        return Route(
            "/metrics",
            lambda _request: PlainTextResponse(
                "metrics are not available here: shim_core.metrics is not installed\n", 404
            ),
        )
    return Route("/metrics", _Asgi(app))


class _Asgi:
    """An ASGI app as a route's endpoint (a plain function would be taken for a handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _metrics_app(connection: RedisConnectionManager, settings: Settings) -> ASGIApp | None:
    try:
        module: Any = importlib.import_module("shim_core.metrics")
    except ImportError:
        return None
    factory = getattr(module, "metrics_asgi_app", None)
    return None if factory is None else factory(connection, settings)
