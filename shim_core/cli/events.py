"""``shim events``: the durable event history of a run or of the whole namespace."""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from shim_core.cli._common import app, redis_options, where
from shim_core.errors import ShimError
from shim_core.history import START, EventLog, StreamedEvent
from shim_core.models import EventType, ProgressEvent
from shim_core.queue import TaskQueue
from shim_core.serde import converter

#: Seconds one blocking read of ``--follow`` waits before checking whether the run ended.
_FOLLOW_WAIT = 1.0


@app.command()
@click.argument("run_id", required=False)
@redis_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def events(queue: TaskQueue, run_id: str | None, follow: bool, as_json: bool) -> None:
    """Print the timeline of a run (RUN), or every event of the namespace.

    The history is kept in Redis (the last 100,000 script calls' events, heartbeats aside), so
    it is complete for a run that ended while nobody watched. With --follow, a run's events are
    printed until every task of the run is finished; the namespace's until Ctrl-C.

    \b
    Examples:
      shim events 3f2a9c01d4 --redis redis://localhost:6379/0
      shim events 3f2a9c01d4 --follow --json
      shim events --follow
    """
    log = EventLog(queue.connection, queue.settings)
    task_ids: frozenset[str] = frozenset()
    if run_id is None:
        cursor = _print_all(log, as_json)
    else:
        from shim_core.supervisor.runs import RunNotFound, load_run

        try:
            record = load_run(queue, run_id)
        except RunNotFound as exc:
            raise ShimError(f"{exc} in {where(queue.settings)}") from None
        task_ids = frozenset(record.task_ids)
        # Stream ids start with the server's clock in ms: the run's history starts at its
        # creation, read by the same clock.
        start = f"{int(record.created_at.timestamp() * 1000) - 1}-0"
        history = log.of_run(run_id, after=start)
        _print(history, run_id, as_json)
        cursor = history[-1].stream_id if history else start
        if not history and not follow:
            click.echo(f"no events of run {run_id} in {where(queue.settings)}", err=True)
    if follow and not (task_ids and _finished(queue, task_ids)):
        _follow(queue, log, cursor, run_id=run_id, task_ids=task_ids, as_json=as_json)


def _print_all(log: EventLog, as_json: bool) -> str:
    """Print the whole history; returns the cursor after it."""
    cursor = START
    for batch in log.batches(cursor):
        _print(list(batch), None, as_json)
        cursor = batch.cursor
    if cursor == START:
        click.echo(f"no events in {where(log.settings)}", err=True)
    return cursor


def _follow(
    queue: TaskQueue,
    log: EventLog,
    cursor: str,
    *,
    run_id: str | None,
    task_ids: frozenset[str],
    as_json: bool,
) -> None:
    """Print new events until the run is finished (forever without a run)."""
    prefix = f"{run_id}:" if run_id else ""
    while True:
        batch = log.wait(cursor, _FOLLOW_WAIT)
        cursor = batch.cursor
        if batch:
            mine = [e for e in batch if e.event.task_id.startswith(prefix)]
            _print(mine, run_id, as_json)
            ended = any(e.event.status is not None and e.event.status.is_final for e in mine)
            if task_ids and ended and _finished(queue, task_ids):
                return


def _finished(queue: TaskQueue, task_ids: Iterable[str]) -> bool:
    return all(state.status.is_final for state in queue.states(task_ids))


def _print(items: list[StreamedEvent], run_id: str | None, as_json: bool) -> None:
    for item in items:
        if as_json:
            plain = converter.unstructure(item.event)
            click.echo(json.dumps({"stream_id": item.stream_id, **plain}, default=str))
        else:
            click.echo(render_event(item.event, run_id))


def render_event(event: ProgressEvent, run_id: str | None = None) -> str:
    """One aligned line: time, kind, task (its plan id within a run), worker and details."""
    when = event.timestamp.strftime("%H:%M:%S.%f")[:-3] if event.timestamp else "--:--:--.---"
    task = event.task_id
    if run_id and task.startswith(f"{run_id}:"):
        task = task[len(run_id) + 1 :]
    if event.type in (EventType.REGISTERED, EventType.CRASHED, EventType.OFFLINE):
        return f"{when}  worker {event.type.value:<10} {event.worker_id}"
    parts = [f"{when}  {event.type.value:<10} {task:<20}"]
    if event.worker_id:
        parts.append(f"on {event.worker_id}")
    if event.attempt:
        parts.append(f"attempt {event.attempt}")
    if event.progress is not None:
        parts.append(f"{event.progress.percentage:.0%} {event.progress.message or ''}".rstrip())
    if event.completion is not None and event.completion.error:
        parts.append(f"error: {event.completion.error}")
    return "  ".join(parts).rstrip()
