"""Commands about runs: plan, run, submit, status, cancel, retry."""

from __future__ import annotations

import json
import sys

import click

from shim_core.cli._common import (
    app,
    connection_options,
    decompose_context,
    print_report,
    redis_options,
    request_options,
    where,
)
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.console import (
    LiveProgress,
    progress_line,
    render_merge,
    render_plan,
    render_report,
    terminal_width,
)
from shim_core.errors import ShimError
from shim_core.queue import TaskQueue
from shim_core.supervisor.plan import Plan, plan_to_data
from shim_core.supervisor.runs import load_run


@app.command()
@click.argument("request")
@request_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Workers the estimate assumes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the plan to this file (YAML, or JSON for a .json name), for review and "
    "`shim run FILE`.",
)
def plan(
    *,
    request: str,
    strategy: str | None,
    executor: str,
    agent: str | None,
    budget_usd: float | None,
    workers: int,
    as_json: bool,
    output: str | None,
) -> None:
    """Decompose REQUEST (a plan file, a numbered / bulleted list, or with `--strategy agent`
    any request an agent CLI turns into a plan) without running it: tasks, dependencies,
    waves, parallelisation factor and estimate.

    \b
    Examples:
      shim plan examples/auth_system.yaml
      shim plan $'1. Design schema\n2. Build API (after 1)\n3. Write docs'
      shim plan "Add login with tests" --strategy agent --agent claude -o plan.yaml
    """
    from shim_core.plugins import Plugins
    from shim_core.supervisor.decomposer import TaskDecomposer

    decomposition = TaskDecomposer(Plugins()).decompose(
        request, strategy, decompose_context(executor, agent)
    )
    if output:
        write_plan(decomposition.plan, output)
        click.echo(f"plan written to {output}", err=True)
    if as_json:
        data = decomposition.to_dict()
        data["makespan"] = {str(workers): decomposition.makespan(workers)}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render_plan(decomposition, workers))


@app.command()
@click.argument("request")
@request_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(0),
    default=None,
    help="Local workers to start [default: 3 on the embedded Redis, 0 with --redis, "
    "where `shim worker` processes do the work].",
)
@connection_options(
    "Use this Redis and its fleet (default $SHIM_REDIS_URL, else a private "
    "embedded Redis for this run)."
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
    agent: str | None,
    budget_usd: float | None,
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
    from shim_core.local import LocalSession
    from shim_core.plugins import Plugins
    from shim_core.supervisor.decomposer import TaskDecomposer
    from shim_core.supervisor.supervisor import RunTimeout

    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    local = settings.redis_url.startswith("embedded:")
    count = workers if workers is not None else (3 if local else 0)
    if local and count == 0:
        raise ShimError(
            "--workers 0 on the embedded store would wait for ever: no other process can reach "
            "it. Give at least one worker, or --redis URL of a fleet's server"
        )
    plugins = Plugins()
    decomposition = TaskDecomposer(plugins).decompose(
        request, strategy, decompose_context(executor, agent)
    )
    if not as_json:
        click.echo(render_plan(decomposition, max(count, 1)), err=True)
    asked = not yes and not as_json and sys.stdin.isatty()
    if asked and not click.confirm("Run this plan?", default=True, err=True):
        click.echo("not started: nothing was queued", err=True)
        raise click.exceptions.Exit(1)
    live = None if as_json else LiveProgress()
    # The person running the plan wrote it: the local workers run the executors it names.
    named = {executor, *(t.executor for t in decomposition.plan.tasks if t.executor)}
    needed = named & set(plugins.executors)  # one not installed fails its tasks as it always has
    session = LocalSession(
        settings, workers=count, default_executor=executor, plugins=plugins, allow=needed
    )
    with session as run:
        supervisor = run.supervisor
        record = supervisor.submit(decomposition, budget_usd=budget_usd)
        if not as_json:
            click.echo(f"Run {record.run_id} on {run.where}, {count} local worker(s)", err=True)
            if count == 0 and not supervisor.registry.live_worker_ids():
                click.echo(
                    "No worker is connected yet: start some with `shim worker --redis "
                    "URL`; waiting.",
                    err=True,
                )
        try:
            report = supervisor.wait(
                record.run_id, timeout=timeout, on_update=live.update if live else None
            )
        except RunTimeout:
            if count:  # the local workers stop with this command: leave no work behind
                supervisor.cancel_run(record.run_id, "timed out")
            raise
        except KeyboardInterrupt:
            supervisor.cancel_run(record.run_id, "interrupted by the user")
            click.echo(f"\ninterrupted: run {record.run_id} cancelled", err=True)
            raise click.exceptions.Exit(130) from None
        finally:
            if live is not None:
                live.close()
    print_report(report, as_json)


@app.command()
@click.argument("request")
@request_options
@connection_options("Redis of the running fleet (default $SHIM_REDIS_URL).")
@click.option(
    "--wait", "wait_for", is_flag=True, help="Block until the run ends; print its report."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def submit(
    *,
    request: str,
    strategy: str | None,
    executor: str,
    agent: str | None,
    budget_usd: float | None,
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
    connection = RedisConnectionManager.for_settings(settings)
    connection.connect()
    supervisor = Supervisor(connection, settings)
    try:
        decomposition = supervisor.decompose(request, strategy, decompose_context(executor, agent))
        record = supervisor.submit(decomposition, budget_usd=budget_usd)
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
    print_report(report, as_json)


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
    from shim_core.supervisor.runs import RunNotFound

    supervisor = Supervisor(queue.connection, queue.settings)
    try:
        try:
            record = load_run(queue, run_id)
        except RunNotFound as exc:
            raise ShimError(f"{exc} in {where(queue.settings)}") from None
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
        click.echo(progress_line(progress, terminal_width(sys.stdout)))
        click.echo(render_report(report))
    if progress.finished and not report.ok:  # as `shim run` of the same run would exit
        sys.exit(1)


def _namespace_status(queue: TaskQueue, as_json: bool) -> None:
    stats = queue.stats()
    cooldowns = {agent: end.isoformat() for agent, end in queue.cooldowns().items()}
    if as_json:
        data = {"paused": stats.paused, "by_type": stats.by_type, "cooldowns": cooldowns}
        click.echo(json.dumps(data))
        return
    click.echo(f"namespace {queue.settings.namespace!r}" + (" (paused)" if stats.paused else ""))
    if not stats.by_type:
        click.echo(f"  no tasks in {where(queue.settings)}")
    for task_type, counts in sorted(stats.by_type.items()):
        line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        click.echo(f"  {task_type}: {line}")
    for agent, end in sorted(cooldowns.items()):
        click.echo(f"  agent {agent} is rate limited: no claims until {end}")


@app.command()
@click.argument("target")
@redis_options
def cancel(queue: TaskQueue, target: str) -> None:
    """Cancel a run (every unfinished task) or one task (and its dependents).

    \b
    Examples:
      shim cancel 3f2a9c01d4 --redis redis://localhost:6379/0
      shim cancel 3f2a9c01d4:login --redis redis://localhost:6379/0
    """
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
    """Run a failed or cancelled task again, or every failed / cancelled task of a run
    (dependencies first).

    \b
    Examples:
      shim retry 3f2a9c01d4 --redis redis://localhost:6379/0
      shim retry 3f2a9c01d4:login --redis redis://localhost:6379/0
    """
    from shim_core.supervisor.runs import RunNotFound, retry_run

    try:
        record = load_run(queue, target)
    except RunNotFound:
        click.echo(f"task {target} is {queue.retry(target).value} again")
        return
    again = retry_run(queue, record.run_id)
    click.echo(f"retrying {len(again)} task(s) of run {target}")


@app.command()
@click.argument("run_id")
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the merge report as JSON.")
def merge(queue: TaskQueue, run_id: str, as_json: bool) -> None:
    """Merge the branches of RUN's completed agent tasks again, dependencies first, into
    shim/RUN/@merged (rebuilt from the run's base commit), e.g. after a person fixed a
    conflict on a task branch. Exit 1 when a conflict stops the merge.

    \b
    Example:
      shim merge 65a0df0ca3 --redis redis://localhost:6379/0
    """
    from shim_core.supervisor import Supervisor

    result = Supervisor(queue.connection, queue.settings).merge(run_id)
    if result is None:
        raise ShimError(f"run {run_id} has no git worktrees to merge")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_merge(result))
    if result.conflicts:
        sys.exit(1)


def write_plan(plan: Plan, path: str) -> None:
    """Write ``plan`` as a plan file (JSON for a ``.json`` name, else YAML)."""
    import yaml

    data = plan_to_data(plan)
    text = (
        json.dumps(data, indent=2) + "\n"
        if path.endswith(".json")
        else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ShimError(f"cannot write {path}: {exc.strerror or exc}") from None


@app.command()
@click.option(
    "--worktrees",
    is_flag=True,
    help="Remove the task worktrees SHIM left on this machine (crashed workers) instead.",
)
@click.option(
    "--repo",
    metavar="PATH|URL",
    help="With --worktrees: the repository (default: the git repository holding the current "
    "directory).",
)
@connection_options()
def clean(worktrees: bool, repo: str | None, redis_url: str | None, namespace: str | None) -> None:
    """Remove from Redis what is past the retention setting (SHIM_RETENTION_MS, default 7 days):
    finished tasks with their logs and checkpoints, crashed or offline worker records, run
    records whose tasks are gone; and leftovers of removed tasks at any age. With --worktrees,
    remove instead the worktrees of a repository's agent tasks left on this machine (their
    branches stay).

    \b
    Examples:
      shim clean --redis redis://localhost:6379/0
      shim clean --worktrees
    """
    if worktrees:
        from shim_core.worktrees import Worktrees, resolve_repo

        found = resolve_repo(repo)
        if found is None:
            raise ShimError("not inside a git repository: pass --repo PATH|URL")
        removed = Worktrees(found.repo).clean()
        click.echo(f"removed {removed} worktree(s) of {found.repo}")
        return
    settings = Settings.load(redis_url=redis_url, namespace=namespace)
    connection = RedisConnectionManager.for_settings(settings)
    connection.connect()
    try:
        from shim_core.registry import WorkerRegistry
        from shim_core.retention import Retention

        queue = TaskQueue(connection, settings)
        report = Retention(queue, WorkerRegistry(connection, settings)).clean()
    finally:
        connection.disconnect()
    click.echo(str(report))
