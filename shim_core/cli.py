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
from shim_core.console import LiveProgress, bar, render_plan, render_report
from shim_core.doctor import check_invariants
from shim_core.errors import ConnectionFailed, ShimError
from shim_core.models import TaskStatus
from shim_core.queue import TaskQueue
from shim_core.supervisor.runs import load_run

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


@app.command()
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="SHIM_REDIS_URL",
    help="Redis URL of the fleet (default $SHIM_REDIS_URL); a worker process needs a "
    "real server, not the embedded one.",
)
@click.option(
    "--namespace",
    "-n",
    metavar="NS",
    envvar="SHIM_NAMESPACE",
    help="Namespace of the fleet (default $SHIM_NAMESPACE or 'default').",
)
@click.option(
    "--types",
    metavar="T1,T2",
    help="Task types to claim (default: every type its "
    "executors declare, or the built-in five with --default-executor).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Tasks run at once.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(0.05),
    metavar="SECONDS",
    help="Heartbeat interval in seconds, fractions allowed (default 10).",
)
@click.option("--name", help="Readable name shown in `shim workers` (default: the worker id).")
@click.option("--id", "worker_id", help="Worker id (default: host-pid-random).")
@click.option(
    "--default-executor",
    metavar="NAME",
    help="Executor for tasks that name none (e.g. sim, shell, python).",
)
@click.option(
    "--reap-interval",
    type=click.FloatRange(0.05),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between reaper passes (how late a crash is noticed at most).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, time to finish running tasks.",
)
def worker(
    *,
    redis_url: str | None,
    namespace: str | None,
    types: str | None,
    concurrency: int,
    heartbeat: float | None,
    name: str | None,
    worker_id: str | None,
    default_executor: str | None,
    reap_interval: float,
    grace: float,
) -> None:
    """Join a fleet: claim, execute and report tasks until stopped (SIGTERM / Ctrl-C).

    The first signal stops gracefully (finish or release running tasks within --grace), a
    second exits at once (the tasks are then reaped by the other workers).

    \b
    Example:
      shim worker --redis redis://localhost:6379/0 --types code,test -c 2 --heartbeat 1
    """
    from shim_core.worker import Worker, WorkerConfig

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    if settings.redis_url.startswith("embedded:"):
        raise ShimError(
            "a worker process needs a Redis server: pass --redis URL or set "
            "SHIM_REDIS_URL (the embedded store lives inside one process)"
        )
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "heartbeat_interval": heartbeat,
        "name": name or "",
        "default_executor": default_executor,
        "shutdown_grace": grace,
        "reap_interval": reap_interval,
    }
    if worker_id:
        options["worker_id"] = worker_id
    if types:
        options["types"] = tuple(t.strip() for t in types.split(",") if t.strip())
    config = WorkerConfig(**options)
    connection = RedisConnectionManager(settings.redis_url)
    connection.connect()
    _configure_logging()
    runner = Worker(connection, settings, config)
    for problem in runner.plugins.errors:
        click.echo(f"warning: {problem}", err=True)
    click.echo(
        f"worker {runner.id} joined {mask_url(settings.redis_url)} namespace "
        f"{settings.namespace!r} (types: {','.join(runner.capabilities.supported_task_types)})",
        err=True,
    )
    try:
        runner.run()
    finally:
        connection.disconnect()


@app.command()
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
def workers(queue: TaskQueue, as_json: bool) -> None:
    """List the workers of the namespace with their status and statistics."""
    from shim_core.registry import WorkerRegistry
    from shim_core.serde import converter

    registry = WorkerRegistry(RedisConnectionManager(queue.settings.redis_url), queue.settings)
    found = registry.all_workers()
    if as_json:
        click.echo(json.dumps([converter.unstructure(w) for w in found]))
        return
    if not found:
        click.echo("no workers")
    for w in found:
        task = w.current_task.task_id if w.current_task else "-"
        click.echo(
            f"{w.name or w.id:<30} {w.status.value:<8} done {w.stats.tasks_completed:>5} "
            f"failed {w.stats.tasks_failed:>4} current {task}"
        )


@app.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins(as_json: bool) -> None:
    """List the installed executors, decomposition strategies and checkpoint backends."""
    from shim_core.plugins import Plugins

    found = Plugins()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "provided": [
                        {"kind": p.kind, "name": p.name, "plugin": p.plugin, "package": p.package}
                        for p in found.provided
                    ],
                    "errors": [str(e) for e in found.errors],
                }
            )
        )
        return
    for p in sorted(found.provided, key=lambda p: (p.kind, p.name)):
        click.echo(f"{p.kind:<20} {p.name:<12} from {p.package} ({p.plugin})")
    for problem in found.errors:
        click.echo(f"error: {problem}")


# --------------------------------------------------------------------------- runs
def _request_options(func: F) -> F:
    func = click.option(
        "--strategy",
        "-s",
        metavar="NAME",
        help="Decomposition strategy (default: 'plan' for a .yaml/.yml/.json file, else 'lines').",
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


def _decompose(supervisor: Any, request: str, strategy: str | None, executor: str) -> Any:
    return supervisor.decompose(request, strategy, {"executor": executor})


@app.command()
@click.argument("request")
@_request_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Workers the estimate assumes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(request: str, strategy: str | None, executor: str, workers: int, as_json: bool) -> None:
    """Decompose REQUEST (a plan file, or a numbered / bulleted list) without running it: tasks,
    dependencies, waves, parallelisation factor and estimate.

    \b
    Examples:
      shim plan examples/auth_system.yaml
      shim plan $'1. Design schema\n2. Build API (after 1)\n3. Write docs'
    """
    from shim_core.plugins import Plugins
    from shim_core.supervisor.decomposer import TaskDecomposer

    decomposition = TaskDecomposer(Plugins()).decompose(request, strategy, {"executor": executor})
    if as_json:
        data = decomposition.to_dict()
        data["makespan"] = {str(workers): decomposition.makespan(workers)}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render_plan(decomposition, workers))


@app.command()
@click.argument("request")
@_request_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(0),
    default=None,
    help="Local workers to start [default: 3 on the embedded Redis, 0 with --redis, "
    "where `shim worker` processes do the work].",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="SHIM_REDIS_URL",
    help="Use this Redis and its fleet (default $SHIM_REDIS_URL, else a private "
    "embedded Redis for this run).",
)
@click.option(
    "--namespace",
    "-n",
    metavar="NS",
    envvar="SHIM_NAMESPACE",
    help="Namespace of the fleet (default $SHIM_NAMESPACE or 'default').",
)
@click.option("--yes", "-y", is_flag=True, help="Run without asking for approval.")
@click.option("--json", "as_json", is_flag=True, help="Print only the final report, as JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Give up (exit 1) when the run takes longer.",
)
def run(
    *,
    request: str,
    strategy: str | None,
    executor: str,
    workers: int | None,
    redis_url: str | None,
    namespace: str | None,
    yes: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Decompose REQUEST, show the waves, run the tasks on a fleet with live progress, and
    report. Exit 0 only when every task completed; 1 when any failed or was cancelled; 2 for
    bad input.

    \b
    Examples:
      shim run examples/auth_system.yaml
      shim run examples/auth_system.yaml --workers 5 --json
      shim run plan.yaml --redis redis://localhost:6379/0 --yes
    """
    from contextlib import nullcontext

    import attrs

    from shim_core.local import LocalRedis, LocalWorkers
    from shim_core.plugins import Plugins
    from shim_core.supervisor import Supervisor
    from shim_core.supervisor.decomposer import TaskDecomposer

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    local = settings.redis_url.startswith("embedded:")
    count = workers if workers is not None else (3 if local else 0)
    plugins = Plugins()
    decomposition = TaskDecomposer(plugins).decompose(request, strategy, {"executor": executor})
    if not as_json:
        click.echo(render_plan(decomposition, max(count, 1)), err=True)
    if not yes and not as_json and sys.stdin.isatty():
        click.confirm("Run this plan?", default=True, abort=True, err=True)
    server = LocalRedis() if local else nullcontext(settings.redis_url)
    with server as url:
        settings = attrs.evolve(settings, redis_url=url)
        connection = RedisConnectionManager(url)
        connection.connect()
        supervisor = Supervisor(connection, settings, plugins=plugins)
        fleet = LocalWorkers(
            connection, settings, count, default_executor=executor, plugins=plugins
        )
        live = None if as_json else LiveProgress()
        try:
            fleet.start()
            supervisor.start()
            record = supervisor.submit(decomposition)
            if not as_json:
                where = server.description if isinstance(server, LocalRedis) else mask_url(url)
                click.echo(f"Run {record.run_id} on {where}, {count} local worker(s)", err=True)
                if count == 0 and not supervisor.registry.live_worker_ids():
                    click.echo(
                        "No worker is connected yet: start some with `shim worker "
                        "--redis URL`; waiting.",
                        err=True,
                    )
            try:
                report = supervisor.wait(
                    record.run_id, timeout=timeout, on_update=live.update if live else None
                )
            except KeyboardInterrupt:
                supervisor.cancel_run(record.run_id, "interrupted by the user")
                click.echo(f"\ninterrupted: run {record.run_id} cancelled", err=True)
                raise click.exceptions.Exit(130) from None
        finally:
            if live is not None:
                live.close()
            fleet.stop()
            supervisor.stop()
            connection.disconnect()
    _print_report(report, as_json)


@app.command()
@click.argument("request")
@_request_options
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar="SHIM_REDIS_URL",
    help="Redis of the running fleet (default $SHIM_REDIS_URL).",
)
@click.option(
    "--namespace",
    "-n",
    metavar="NS",
    envvar="SHIM_NAMESPACE",
    help="Namespace of the fleet (default $SHIM_NAMESPACE or 'default').",
)
@click.option(
    "--wait", "wait_for", is_flag=True, help="Block until the run ends; print its report."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def submit(
    *,
    request: str,
    strategy: str | None,
    executor: str,
    redis_url: str | None,
    namespace: str | None,
    wait_for: bool,
    as_json: bool,
) -> None:
    """Enqueue REQUEST for a running fleet and print the run id.

    \b
    Example:
      shim submit examples/auth_system.yaml --redis redis://localhost:6379/0 --wait
    """
    from shim_core.supervisor import Supervisor

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    if settings.redis_url.startswith("embedded:"):
        raise ShimError(
            "submit needs the Redis of a running fleet: pass --redis URL or set "
            "SHIM_REDIS_URL (or use `shim run` to run locally)"
        )
    connection = RedisConnectionManager(settings.redis_url)
    connection.connect()
    supervisor = Supervisor(connection, settings)
    try:
        record = supervisor.submit(_decompose(supervisor, request, strategy, executor))
        if not wait_for:
            click.echo(json.dumps({"run_id": record.run_id}) if as_json else record.run_id)
            return
        if not as_json:
            click.echo(f"Run {record.run_id} submitted; waiting for it to finish", err=True)
        supervisor.start()
        report = supervisor.wait(record.run_id)
    finally:
        supervisor.stop()
        connection.disconnect()
    _print_report(report, as_json)


@app.command()
@click.argument("run_id", required=False)
@redis_options
@click.option("--watch", is_flag=True, help="Keep showing progress until the run ends.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(queue: TaskQueue, run_id: str | None, watch: bool, as_json: bool) -> None:
    """Show a run's progress (RUN), or task counts by type and status for the namespace.

    \b
    Examples:
      shim status --redis redis://localhost:6379/0
      shim status 3f2a9c01d4 --watch
    """
    if run_id is None:
        _namespace_status(queue, as_json)
        return
    from shim_core.supervisor import Supervisor

    connection = RedisConnectionManager(queue.settings.redis_url)
    supervisor = Supervisor(connection, queue.settings)
    try:
        record = load_run(queue, run_id)
        aggregator = supervisor.watch(record)
        progress = aggregator.get_overall_progress()
        if watch and not progress.finished:
            live = LiveProgress()
            try:
                supervisor.wait(run_id, on_update=live.update)
            finally:
                live.close()
        aggregator = supervisor.aggregator or aggregator  # wait() starts a fresh view
        aggregator.reconcile()
        report = supervisor.report(record, aggregator.completion_order)
        progress = aggregator.get_overall_progress()
    finally:
        supervisor.stop()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "finished": progress.finished,
                    "percent_complete": progress.percent_complete,
                    "report": report.to_dict(),
                },
                indent=2,
                default=str,
            )
        )
    else:
        click.echo(
            f"{bar(progress.percent_complete)} {progress.percent_complete:.0%}  "
            f"{progress.completed_tasks}/{progress.total_tasks} done, "
            f"{progress.running_tasks} running, {progress.queued_tasks} queued"
        )
        click.echo(render_report(report))


def _namespace_status(queue: TaskQueue, as_json: bool) -> None:
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
@click.argument("target")
@redis_options
def cancel(queue: TaskQueue, target: str) -> None:
    """Cancel a run (every unfinished task) or one task (and its dependents)."""
    from shim_core.supervisor.runs import RunNotFound, cancel_run

    try:
        record = load_run(queue, target)
    except RunNotFound:
        n = queue.cancel(target, "cancelled by the user")
        click.echo(f"cancelled task {target}" + (f" and {n} dependent(s)" if n else ""))
        return
    count = cancel_run(queue, record.run_id, "run cancelled by the user")
    click.echo(f"cancelled {count} task(s) of run {target}")


@app.command()
@click.argument("target")
@redis_options
def retry(queue: TaskQueue, target: str) -> None:
    """Run a failed or cancelled task again, or every failed / cancelled task of a run."""
    from shim_core.supervisor.runs import RunNotFound

    try:
        record = load_run(queue, target)
    except RunNotFound:
        click.echo(f"task {target} is {queue.retry(target).value} again")
        return
    again = [
        t.id
        for t in queue.get_many(record.task_ids)
        if t is not None and t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    ]
    for task_id in again:  # plan order: dependencies first
        queue.retry(task_id)
    click.echo(f"retrying {len(again)} task(s) of run {target}")


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(render_report(report))
    if not report.ok:
        sys.exit(1)


def _configure_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


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
    except ShimError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
