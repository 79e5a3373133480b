"""What every ``shim`` command shares: the click group, Redis options, report printing."""

from __future__ import annotations

import functools
import gc
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from shim_core import __version__
from shim_core.redact import mask_url

if TYPE_CHECKING:
    from shim_core.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

#: The modules of :mod:`shim_core.cli` that define commands, and which one defines each command
#: (imported when the command is first looked up). A command missing here still works: an
#: unknown name imports every command module.
#: Every command: the module that defines it and the line ``shim --help`` shows for it (its
#: ``short_help``), so that listing the commands imports none of their modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "cancel": ("runs", "Cancel a run, or one task and its dependents."),
    "clean": ("runs", "Remove what is past retention, or an agent run's worktrees."),
    "dashboard": ("dashboard", "Serve a live web view of the namespace, with actions."),
    "doctor": ("fleet", "Check that every task is in exactly one state set."),
    "events": ("events", "Print the timeline of a run, or of the whole namespace."),
    "merge": ("runs", "Merge the branches of a run's agent tasks again."),
    "metrics": ("metrics", "Serve the namespace's Prometheus metrics."),
    "pause": ("fleet", "Stop workers from claiming new tasks."),
    "plan": ("runs", "Decompose REQUEST and show its tasks, waves and estimate."),
    "plugins": ("fleet", "List the installed executors, strategies and backends."),
    "resume": ("fleet", "Let workers claim tasks again."),
    "retry": ("runs", "Run failed or cancelled tasks again."),
    "run": ("runs", "Decompose REQUEST, run it on a fleet with live progress, report."),
    "status": ("runs", "Show a run's progress, or the namespace's task counts."),
    "submit": ("runs", "Enqueue REQUEST for a running fleet and print the run id."),
    "worker": ("fleet", "Join a fleet: claim, execute and report tasks until stopped."),
    "workers": ("fleet", "List the workers: status, statistics and the tasks they hold."),
}
COMMAND_MODULES: dict[str, str] = {name: module for name, (module, _) in COMMANDS.items()}
COMMAND_MODULE_NAMES: tuple[str, ...] = tuple(dict.fromkeys(COMMAND_MODULES.values()))


_REDIS_HELP = (
    "Redis URL (redis://, rediss://, unix://, redis+sentinel://, embedded://); "
    "default $SHIM_REDIS_URL or the embedded in-process server. TLS files: $SHIM_TLS_CA, "
    "$SHIM_TLS_CERT, $SHIM_TLS_KEY (see docs/deployment.md)."
)


def connection_options(redis_help: str = _REDIS_HELP) -> Callable[[F], F]:
    """``--redis URL`` and ``--namespace NS`` (from ``SHIM_REDIS_URL`` / ``SHIM_NAMESPACE``)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--namespace",
            "-n",
            metavar="NS",
            envvar="SHIM_NAMESPACE",
            help="Namespace of the fleet (default $SHIM_NAMESPACE or 'default').",
        )(func)
        return click.option(
            "--redis", "redis_url", metavar="URL", envvar="SHIM_REDIS_URL", help=redis_help
        )(func)

    return decorate


def redis_options(func: F) -> F:
    """The connection options, turned into a connected ``queue`` argument for the command."""

    @connection_options()
    @functools.wraps(func)
    def wrapper(*args: Any, redis_url: str | None, namespace: str | None, **kwargs: Any) -> Any:
        from shim_core.queue import TaskQueue

        common = sys.modules[__name__]  # its Settings and RedisConnectionManager: see __getattr__
        settings = common.Settings.load(redis_url=redis_url, namespace=namespace)
        connection = common.RedisConnectionManager.for_settings(settings)
        try:
            connection.connect()
            return func(*args, queue=TaskQueue(connection, settings), **kwargs)
        finally:
            connection.disconnect()

    return wrapper  # type: ignore[return-value]


def __getattr__(name: str) -> Any:
    """``Settings`` and ``RedisConnectionManager``, imported when first read: the help of a
    command needs no Redis client (``shim worker --help`` loads a third of what it did). Read
    through the module, so that tests can replace them."""
    if name == "Settings":
        from shim_core.config import Settings

        return Settings
    if name == "RedisConnectionManager":
        from shim_core.connection import RedisConnectionManager

        return RedisConnectionManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyGroup(click.Group):
    """A group whose commands are registered by importing their module when first looked up
    (:data:`COMMAND_MODULES`): ``shim worker`` loads neither the plan reader nor the supervisor."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        _import_commands(COMMAND_MODULE_NAMES)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module = COMMAND_MODULES.get(cmd_name)
            _import_commands((module,) if module else COMMAND_MODULE_NAMES)
        command = super().get_command(ctx, cmd_name)
        if command is not None and cmd_name in COMMANDS:
            command.short_help = COMMANDS[cmd_name][1]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``shim --help``, from :data:`COMMANDS` (imports no command
        module: about 0.1 s instead of 0.6 s), plus any command registered another way."""
        rows = {name: summary for name, (_, summary) in COMMANDS.items()}
        for name, command in self.commands.items():
            if name not in rows and not command.hidden:
                rows[name] = command.get_short_help_str()
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows.items()))


def _import_commands(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(f"shim_core.cli.{module}")


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shim")
def app() -> None:
    """SHIM: run a plan of tasks on a fleet of workers coordinated through Redis."""


def request_options(func: F) -> F:
    func = click.option(
        "--strategy",
        "-s",
        metavar="NAME",
        help="Decomposition strategy (default: 'plan' for a .yaml/.yml/.json file, else 'lines').",
    )(func)
    func = click.option(
        "--agent",
        metavar="NAME",
        help="Agent CLI the 'agent' strategy asks for a plan (default: claude).",
    )(func)
    func = click.option(
        "--budget",
        "budget_usd",
        type=click.FloatRange(0, 1_000_000, min_open=True),
        metavar="USD",
        help="Most the run's agents may spend (overrides the plan's budget_usd); once spent, "
        "its remaining agent tasks are cancelled.",
    )(func)
    func = click.option(
        "--executor",
        "-e",
        metavar="NAME",
        default="sim",
        show_default=True,
        help="Executor for tasks that name none ('sim' simulates the work).",
    )(func)
    return func


def print_report(report: Any, as_json: bool) -> None:
    from shim_core.console import render_report

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(render_report(report))
    if not report.ok or (report.merge is not None and report.merge.conflicts):
        sys.exit(1)


#: Whether this process is the ``shim`` command itself (set by :func:`shim_core.cli.main`), rather
#: than a program running a command inside its own process (tests through CliRunner, say).
standalone = False


def pause_gc() -> None:
    """Pause the cyclic garbage collector while a long-running command sets itself up (the
    worker: its modules, plugins, connections). Collecting would walk the same new, long-lived
    objects again and again, about 9 % of a worker's start. :func:`resume_gc` resumes it, and
    so does the end of the command, whatever happens; in the ``shim`` process only."""
    if standalone and gc.isenabled():
        gc.disable()
        click.get_current_context().call_on_close(gc.enable)


def resume_gc() -> None:
    """Resume the collector (before a command's long run), with what the command set up frozen
    (``gc.freeze``): no collection walks it again. The few cycles left over from loading are
    never freed; the worker keeps everything else it loaded for its whole life anyway."""
    if standalone and not gc.isenabled():
        gc.freeze()
        gc.enable()


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def decompose_context(executor: str, agent: str | None) -> dict[str, Any]:
    """What the request options give a decomposition strategy."""
    context: dict[str, Any] = {"executor": executor}
    if agent:
        context["agent"] = agent
    return context


def where(settings: Settings) -> str:
    """The namespace and Redis a command talked to, fit to print (password masked); for the
    embedded store, why a fleet's work is not there."""
    text = f"namespace {settings.namespace!r} at {mask_url(settings.redis_url)}"
    if settings.redis_url.startswith("embedded:"):
        text += " (this command's own empty store: give --redis URL or set SHIM_REDIS_URL)"
    return text
