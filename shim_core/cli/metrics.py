"""``shim metrics``: a standalone Prometheus exporter of one namespace."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from shim_core.cli._common import app, connection_options, where
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError


@app.command()
@connection_options()
@click.option(
    "--host", default="127.0.0.1", show_default=True, metavar="HOST", help="Address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    metavar="PORT",
    help="Port to listen on (0: any free port, printed at start).",
)
@click.option("--once", is_flag=True, help="Print the metrics once to stdout and exit.")
def metrics(
    *, redis_url: str | None, namespace: str | None, host: str, port: int, once: bool
) -> None:
    """Serve the namespace's Prometheus metrics at http://HOST:PORT/metrics.

    Each scrape reads the namespace's counters from Redis (a few round trips, whatever the
    number of tasks); the exporter keeps nothing, so several may watch one namespace. Runs
    until SIGTERM / Ctrl-C.

    \b
    Examples:
      shim metrics --redis redis://localhost:6379/0 --namespace team-a --port 9464
      shim metrics --redis redis://localhost:6379/0 --once | grep '^shim_tasks'
    """
    from prometheus_client import start_http_server

    from shim_core.metrics import namespace_registry, render

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    connection = RedisConnectionManager.for_settings(settings)
    connection.connect()
    try:
        if settings.redis_url.startswith("embedded:"):
            click.echo(f"note: reading {where(settings)}", err=True)
        if once:
            click.echo(render(connection, settings), nl=False)
            return
        try:
            server, _ = start_http_server(
                port, addr=host, registry=namespace_registry(connection, settings)
            )
        except OSError as exc:
            raise ShimError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        click.echo(
            f"serving the metrics of {where(settings)} at "
            f"http://{host}:{server.server_port}/metrics",
            err=True,
        )
        _wait_for_signal()
        server.shutdown()
        server.server_close()
    finally:
        connection.disconnect()


def _wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (the handlers before are put back afterwards)."""
    stop = threading.Event()

    def handle(_signum: int, _frame: Any) -> None:
        stop.set()

    before = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
