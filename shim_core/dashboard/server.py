"""Serving the dashboard with uvicorn (plain: asyncio and h11, nothing compiled)."""

from __future__ import annotations

import socket

import uvicorn

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard.app import create_app
from shim_core.dashboard.guard import TOKEN_ENV, check_token, is_loopback
from shim_core.dashboard.live import Hub
from shim_core.errors import ConfigError

#: Seconds open live streams get to end when the server stops.
SHUTDOWN_GRACE_S = 1


def check_binding(host: str, token: str | None) -> None:
    """Refuse (ConfigError) to serve on a non-loopback address without a token, or with a
    token shorter than 16 characters."""
    check_token(token)
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"the dashboard serves {host} only with a token: set {TOKEN_ENV} "
            "(every request must then carry it), or keep the default --host 127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port), or a ConfigError saying
    why not (a port in use, an address this machine does not have)."""
    sock = None
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, ending the live streams first when it stops (else they would hold
    the shutdown for its whole grace period)."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.close()
        await super().shutdown(sockets)


class DashboardServer:
    """A dashboard served on one socket; :meth:`run` blocks until :meth:`stop` (or a signal).

    The socket's own address is checked as ``shim dashboard --host`` is: any address but
    loopback (0.0.0.0 too) needs a token (ConfigError otherwise)."""

    def __init__(
        self,
        connection: RedisConnectionManager,
        settings: Settings,
        sock: socket.socket,
        *,
        token: str | None = None,
    ) -> None:
        check_binding(sock.getsockname()[0], token)
        self.socket = sock
        app = create_app(connection, settings, token=token)
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        #: The app's live hub (what follows the event history for the pages).
        self.hub: Hub = app.state.hub
        self.server = _Server(config, self.hub)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the socket."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    @property
    def started(self) -> bool:
        """Whether requests are answered (the app has started)."""
        return bool(self.server.started)

    def run(self) -> None:
        """Serve until stopped (then the socket is closed)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.server.should_exit = True
