"""The ``shim`` command line: a thin layer over the library, one small function per command.

Exit codes: 0 success, 1 the command found a problem (e.g. ``doctor`` violations), 2 bad input,
3 Redis unreachable. Errors print as one line, never a traceback.
"""

from __future__ import annotations

import sys

import click
import redis

from shim_core.cli import fleet, runs
from shim_core.cli._common import app
from shim_core.connection import mask_url
from shim_core.errors import ConnectionFailed, ShimError
from shim_core.supervisor.supervisor import RunTimeout

__all__ = ["app", "fleet", "main", "runs"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: SHIM errors become one line on stderr and an exit code."""
    try:
        code = app.main(args=argv, prog_name="shim", standalone_mode=False)
        if isinstance(code, int) and code:  # click.exceptions.Exit(n) in non-standalone mode
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConnectionFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        click.echo(f"error: Redis is unreachable: {mask_url(str(exc))}", err=True)
        sys.exit(3)
    except RunTimeout as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except redis.RedisError as exc:
        click.echo(f"error: Redis refused a command: {mask_url(str(exc))}", err=True)
        sys.exit(2)
    except ShimError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
