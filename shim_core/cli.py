"""The ``shim`` command line: a thin layer over the library, one small function per command.

Exit codes: 0 success, 1 the command found a problem (e.g. ``doctor`` violations), 2 bad input,
3 Redis unreachable. Errors print as one line, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shim_core import __version__
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, mask_url
from shim_core.doctor import check_invariants
from shim_core.errors import ConnectionFailed, ShimError
from shim_core.queue import TaskQueue

F = TypeVar("F", bound=Callable[..., Any])


def redis_options(func: F) -> F:
    """The options every command that talks to Redis shares."""

    @click.option(
        "--redis",
        "redis_url",
        metavar="URL",
        envvar="SHIM_REDIS_URL",
        help="Redis URL (redis://, rediss://, unix://, redis+sentinel://, embedded://); "
        "default $SHIM_REDIS_URL or the embedded in-process server.",
    )
    @click.option(
        "--namespace",
        "-n",
        metavar="NS",
        envvar="SHIM_NAMESPACE",
        help="Namespace of the fleet (default $SHIM_NAMESPACE or 'default').",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, redis_url: str | None, namespace: str | None, **kwargs: Any) -> Any:
        settings = Settings.load(redis_url=redis_url, namespace=namespace)
        connection = RedisConnectionManager(settings.redis_url)
        try:
            connection.connect()
            return func(*args, queue=TaskQueue(connection, settings), **kwargs)
        finally:
            connection.disconnect()

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shim")
def app() -> None:
    """SHIM: run a plan of tasks on a fleet of workers coordinated through Redis."""


@app.command()
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(queue: TaskQueue, as_json: bool) -> None:
    """Check that every task of the namespace is in exactly one state set matching its status.

    Exits 1 when it finds a violation.

    \b
    Example:
      shim doctor --redis redis://localhost:6379/0 --namespace team-a
    """
    violations = check_invariants(queue.client, queue.keys)
    stats = queue.stats()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not violations,
                    "tasks": stats.total,
                    "violations": [str(v) for v in violations],
                }
            )
        )
    else:
        where = f"{mask_url(queue.settings.redis_url)} namespace {queue.settings.namespace!r}"
        click.echo(f"checked {stats.total} task(s) in {where}")
        for violation in violations:
            click.echo(f"  violation: {violation}")
        click.echo("no violations" if not violations else f"{len(violations)} violation(s)")
    if violations:
        sys.exit(1)


@app.command()
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(queue: TaskQueue, as_json: bool) -> None:
    """Show task counts by type and status.

    \b
    Example:
      shim status --redis redis://localhost:6379/0 --json
    """
    stats = queue.stats()
    if as_json:
        click.echo(json.dumps({"paused": stats.paused, "by_type": stats.by_type}))
        return
    click.echo(f"namespace {queue.settings.namespace!r}" + (" (paused)" if stats.paused else ""))
    if not stats.by_type:
        click.echo("  no tasks")
    for task_type, counts in sorted(stats.by_type.items()):
        line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        click.echo(f"  {task_type}: {line}")


@app.command()
@redis_options
def pause(queue: TaskQueue) -> None:
    """Stop workers from claiming new tasks (running tasks go on)."""
    queue.pause()
    click.echo(f"paused namespace {queue.settings.namespace!r}")


@app.command()
@redis_options
def resume(queue: TaskQueue) -> None:
    """Let workers claim tasks again."""
    queue.resume()
    click.echo(f"resumed namespace {queue.settings.namespace!r}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: SHIM errors become one line on stderr and an exit code."""
    try:
        app.main(args=argv, prog_name="shim", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConnectionFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except ShimError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
