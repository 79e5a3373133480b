"""Commands about the fleet and the namespace: doctor, pause, resume, worker, workers, plugins."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from shim_core.cli._common import (
    app,
    configure_logging,
    connection_options,
    pause_gc,
    redis_options,
    resume_gc,
    where,
)
from shim_core.errors import ShimError
from shim_core.redact import mask_url

if TYPE_CHECKING:
    from shim_core.queue import TaskQueue


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
    from shim_core.doctor import check_invariants

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
    """Stop workers from claiming new tasks (running tasks go on).

    \b
    Example:
      shim pause --redis redis://localhost:6379/0 --namespace team-a
    """
    queue.pause()
    click.echo(f"paused namespace {queue.settings.namespace!r}")


@app.command()
@redis_options
def resume(queue: TaskQueue) -> None:
    """Let workers claim tasks again.

    \b
    Example:
      shim resume --redis redis://localhost:6379/0 --namespace team-a
    """
    queue.resume()
    click.echo(f"resumed namespace {queue.settings.namespace!r}")


@app.command()
@connection_options(
    "Redis URL of the fleet (default $SHIM_REDIS_URL); a worker process needs a "
    "real server, not the embedded one."
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
    "--prefetch",
    type=click.IntRange(0),
    default=256,
    show_default=True,
    help="Tasks claimed ahead at most while tasks are short (about 20 ms of work is held; "
    "long tasks are never held back from other workers). 0: claim only for an idle thread.",
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
    "--allow",
    "allow",
    multiple=True,
    metavar="E1,E2",
    help="Executors that run code this worker may run (shell, python, agent, a plugin's, or "
    "'all'). Default: none; tasks for them are left to workers that allow them. Anyone who "
    "can write to the Redis server decides what these executors run: see SECURITY.md.",
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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve this worker's own Prometheus metrics at http://HOST:PORT/metrics (0: any free "
    "port, printed at start). Default: off.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address the --metrics-port server listens on.",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Record an OpenTelemetry span per task attempt (needs the otel extra; the exporter is "
    "set up as for any program, e.g. by running the worker under opentelemetry-instrument).",
)
def worker(
    *,
    redis_url: str | None,
    namespace: str | None,
    types: str | None,
    concurrency: int,
    prefetch: int,
    heartbeat: float | None,
    name: str | None,
    worker_id: str | None,
    default_executor: str | None,
    allow: tuple[str, ...],
    reap_interval: float,
    grace: float,
    metrics_port: int | None,
    metrics_host: str,
    otel: bool,
) -> None:
    """Join a fleet: claim, execute and report tasks until stopped (SIGTERM / Ctrl-C).

    The first signal stops gracefully (finish or release running tasks within --grace), a
    second exits at once (the tasks are then reaped by the other workers).

    \b
    Example:
      shim worker --redis redis://localhost:6379/0 --types code,test -c 2 --allow shell,agent
    """
    pause_gc()  # until the worker is set up: see resume_gc below
    from shim_core.config import Settings
    from shim_core.connection import RedisConnectionManager
    from shim_core.permissions import check_permissions, eviction_risk
    from shim_core.worker import Worker, WorkerConfig

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    if settings.redis_url.startswith("embedded:"):
        raise ShimError(
            "a worker process needs a Redis server: pass --redis URL or set "
            "SHIM_REDIS_URL (the embedded store lives inside one process)"
        )
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "prefetch": prefetch,
        "heartbeat_interval": heartbeat,
        "name": name or "",
        "default_executor": default_executor,
        "shutdown_grace": grace,
        "reap_interval": reap_interval,
        "allow": {name.strip() for item in allow for name in item.split(",") if name.strip()},
    }
    if worker_id:
        options["worker_id"] = worker_id
    if types:
        options["types"] = tuple(t.strip() for t in types.split(",") if t.strip())
    config = WorkerConfig(**options)
    connection = RedisConnectionManager.for_settings(settings)
    connection.connect()
    # A missing ACL permission would disable recovery in silence (a reaper pass that fails):
    # refuse to start instead, naming what to grant.
    check_permissions(connection, settings.namespace)
    risk = eviction_risk(connection)
    if risk:
        click.echo(f"warning: {risk}", err=True)
    configure_logging()
    observers, metrics = _observers(config.worker_id, metrics_port, metrics_host, otel)
    runner = Worker(connection, settings, config, observers=observers)
    if metrics is not None:
        metrics.watch_heartbeat(runner.reporter)
    for problem in runner.plugins.errors:
        click.echo(f"warning: {problem}", err=True)
    for task_type in runner.policy.unknown_types:
        click.echo(
            f"warning: type {task_type!r} is neither built in nor declared by an installed "
            "executor: no plan can use it (tasks added through the Python API can)",
            err=True,
        )
    click.echo(
        f"worker {runner.id} joined {mask_url(settings.redis_url)} namespace "
        f"{settings.namespace!r} (types: {','.join(runner.capabilities.supported_task_types)}; "
        f"runs: {','.join(sorted(runner.policy.allowed)) or 'nothing'})",
        err=True,
    )
    if runner.policy.denied:
        click.echo(
            f"tasks for {', '.join(sorted(runner.policy.denied))} are left to other workers "
            "(allow them with --allow)",
            err=True,
        )
    resume_gc()
    try:
        runner.run()
    finally:
        connection.disconnect()


def _observers(
    worker_id: str, metrics_port: int | None, metrics_host: str, otel: bool
) -> tuple[list[Any], Any]:
    """The worker's observers (its metrics server, started here; its spans) and its metrics."""
    observers: list[Any] = []
    metrics = None
    if metrics_port is not None:
        from shim_core.metrics.worker import WorkerMetrics

        metrics = WorkerMetrics()
        port = metrics.serve(metrics_host, metrics_port)
        click.echo(f"worker metrics at http://{metrics_host}:{port}/metrics", err=True)
        observers.append(metrics)
    if otel:
        try:
            from shim_core.metrics.tracing import TaskSpans
        except ImportError:
            raise ShimError("--otel needs OpenTelemetry: pip install 'shim[otel]'") from None
        observers.append(TaskSpans(worker_id))
    return observers, metrics


@app.command()
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@click.option(
    "--all", "show_all", is_flag=True, help="Also show workers that crashed or left long ago."
)
def workers(queue: TaskQueue, as_json: bool, show_all: bool) -> None:
    """List the workers of the namespace: status, statistics, last heartbeat and the tasks each
    holds now (read from the leases, so true to the second). Workers that crashed or left more
    than 10 minutes ago are left out unless --all.

    \b
    Example:
      shim workers --redis redis://localhost:6379/0 --json
    """
    from shim_core.registry import WorkerRegistry
    from shim_core.roster import roster
    from shim_core.serde import converter

    found = roster(queue, WorkerRegistry(queue.connection, queue.settings), show_all=show_all)
    shown, hidden = found.workers, found.hidden
    if as_json:
        rows = []
        for view in shown:
            row = converter.unstructure(view.worker)
            row["status"], row["running"] = view.status, list(view.running)
            rows.append(row)
        click.echo(json.dumps(rows))
        return
    if not shown:
        gone_note = f"; {hidden} gone long ago: --all shows them" if hidden else ""
        click.echo(f"no workers in {where(queue.settings)}{gone_note}")
        return
    click.echo(f"{'WORKER':<34} {'STATUS':<8} {'DONE':>6} {'FAILED':>6} {'SEEN':>6}  CURRENT")
    for view in shown:
        w = view.worker
        click.echo(
            f"{w.id:<34} {view.status:<8} {w.stats.tasks_completed:>6} {w.stats.tasks_failed:>6} "
            f"{_age(view.age):>6}  {', '.join(view.running) or '-'}"
        )
        for agent, reason in sorted(w.refused_agents.items()):
            click.echo(f"{'':<34} refuses {agent} tasks: {reason}")
        if w.denied_executors:
            click.echo(f"{'':<34} not allowed to run: {', '.join(w.denied_executors)}")
    if hidden:
        click.echo(f"({hidden} worker(s) that crashed or left long ago not shown: --all)")


def _age(seconds: float | None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@app.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins(as_json: bool) -> None:
    """List the installed executors, decomposition strategies and checkpoint backends, with
    the package each comes from, and any plugin that failed to load.

    \b
    Example:
      SHIM_DISABLE_PLUGINS=hello shim plugins --json
    """
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
