"""The dashboard's Starlette application: the page, its JSON routes, the live stream and
``/metrics``, behind the guard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard.api import api_routes
from shim_core.dashboard.guard import Guard, check_token
from shim_core.dashboard.live import TICK_S, Hub, View, page_stream
from shim_core.dashboard.state import DashboardState
from shim_core.metrics import metrics_asgi_app

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
    request must carry it (see :mod:`shim_core.dashboard.guard`; ConfigError when it is shorter
    than 16 characters). ``tick_s`` is the most seconds between two updates of the workers'
    heartbeats on the page.
    """
    check_token(token)
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
        await hub.start()  # before the first request: no page starts before the hub's cursor
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(hub.stop)

    routes: list[BaseRoute] = [
        Route("/", lambda _request: FileResponse(STATIC / "index.html")),
        Route("/api/live", live),
        *api_routes(state),
        Mount("/static", StaticFiles(directory=STATIC)),
        Route("/metrics", _Asgi(metrics_asgi_app(connection, settings))),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, token=token)])
    app.state.hub = hub  # the server ends the pages' streams with hub.close() when it stops
    return app


class _Asgi:
    """An ASGI app as a route's endpoint (a plain function would be taken for a handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
