"""The ``shim`` command line: a thin layer over the library, one small function per command.

Exit codes: 0 success, 1 the command found a problem (e.g. ``doctor`` violations), 2 bad input,
3 Redis unreachable. Errors print as one line, never a traceback.

A command's module (:mod:`~shim_core.cli.fleet` or :mod:`~shim_core.cli.runs`) is imported when
the command is looked up, so ``shim worker`` does not load the plan reader and the supervisor.
"""

from __future__ import annotations

import importlib as _importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from shim_core.cli import _common
from shim_core.cli._common import app
from shim_core.errors import ConnectionFailed, ShimError
from shim_core.redact import mask_url

if TYPE_CHECKING:
    from shim_core.cli import fleet, metrics, runs

__all__ = ["app", "fleet", "main", "metrics", "runs"]


def __getattr__(name: str) -> ModuleType:
    """``cli.fleet`` / ``cli.runs``: the command modules, imported on first use."""
    if name in ("fleet", "metrics", "runs"):
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: SHIM errors become one line on stderr and an exit code."""
    _common.standalone = True  # this process is the command: it may tune the whole process
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
    except Exception as exc:
        message, code = _error_exit(exc)
        if message is None:
            raise
        click.echo(message, err=True)
        sys.exit(code)


def _error_exit(exc: BaseException) -> tuple[str | None, int]:
    """The line and exit code for a Redis or SHIM error (None: not one of those).

    The classes are looked up among the loaded modules: a command that never imported redis-py
    (or the supervisor) cannot have raised its errors, and ``shim --help`` need not load them.
    """
    redis: Any = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.RedisError):
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return f"error: Redis is unreachable: {mask_url(str(exc))}", 3
        return f"error: Redis refused a command: {mask_url(str(exc))}", 2
    supervisor: Any = sys.modules.get("shim_core.supervisor.supervisor")
    if supervisor is not None and isinstance(exc, supervisor.RunTimeout):
        return f"error: {exc}", 1
    if isinstance(exc, ShimError):
        return f"error: {exc}", 2
    return None, 0
