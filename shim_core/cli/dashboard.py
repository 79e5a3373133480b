"""The ``shim dashboard`` command: serve the web dashboard of a namespace."""

from __future__ import annotations

import os

import click

from shim_core.cli._common import app as cli_app
from shim_core.cli._common import connection_options
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError
from shim_core.redact import mask_url


@cli_app.command()
@connection_options(
    "Redis URL of the fleet to show (default $SHIM_REDIS_URL); the embedded store of another "
    "process cannot be seen, so a Redis server is needed."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on. Any address but loopback needs $SHIM_DASHBOARD_TOKEN "
    "(16 characters or more).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free."
)
def dashboard(redis_url: str | None, namespace: str | None, host: str, port: int) -> None:
    """Serve a live web view of the namespace: runs drawn as DAGs by waves, the workers, each
    task (log, checkpoints, result), with cancel / retry / pause / resume, and /metrics.

    With $SHIM_DASHBOARD_TOKEN set, every request must carry the token: open the page once as
    http://HOST:PORT/?token=TOKEN (it is kept in a cookie), or send it as
    "Authorization: Bearer TOKEN". The dashboard speaks plain HTTP: beyond loopback, reach it
    through an SSH tunnel or a TLS reverse proxy rather than serving --host 0.0.0.0 on an open
    network (the token would travel in clear).

    \b
    Examples:
      shim dashboard --redis redis://localhost:6379/0
      ssh -L 8765:127.0.0.1:8765 fleet-host     # then http://127.0.0.1:8765/ here
    """
    from shim_core.dashboard import TOKEN_ENV, DashboardServer, check_binding, listen

    token = os.environ.get(TOKEN_ENV) or None
    check_binding(host, token)
    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    if settings.redis_url.startswith("embedded:"):
        raise ShimError(
            "the dashboard needs a Redis server: pass --redis URL or set SHIM_REDIS_URL "
            "(the embedded store lives inside one process)"
        )
    sock = listen(host, port)
    connection = RedisConnectionManager.for_settings(settings)
    try:
        connection.connect()
        server = DashboardServer(connection, settings, sock, token=token)
        click.echo(
            f"dashboard of namespace {settings.namespace!r} at {mask_url(settings.redis_url)} "
            f"on {server.url}" + (" (token required)" if token else ""),
            err=True,
        )
        server.run()
    finally:
        sock.close()
        connection.disconnect()
