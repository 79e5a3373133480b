"""The durable event history: every transition script appends its events to a capped stream,
readers replay it from an entry id and follow it, and ``shim events`` prints a run's timeline."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.history import START, EventBatch, EventLog
from shim_core.keys import Keys
from shim_core.models import (
    EventType,
    ProgressEvent,
    Task,
    TaskResult,
    TaskStatus,
    WorkerRegistration,
)
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.supervisor import Supervisor
from shim_core.supervisor.progress import ProgressAggregator
from tests.helpers import wait_until

Shim = Callable[..., tuple[int, str, str]]


def sim(task_id: str, **kw: Any) -> Task:
    return Task(id=task_id, type="code", executor="sim", title=task_id, **kw)


@pytest.fixture
def log(shim_connection: RedisConnectionManager, shim_settings: Settings) -> EventLog:
    return EventLog(shim_connection, shim_settings)


@pytest.fixture
def run_of(
    shim_connection: RedisConnectionManager, shim_settings: Settings, tmp_path: Path
) -> Iterator[Callable[[list[dict[str, Any]]], str]]:
    """Submit a plan of the given tasks as a run; returns its id."""
    supervisor = Supervisor(shim_connection, shim_settings)

    def submit(tasks: list[dict[str, Any]]) -> str:
        path = tmp_path / "plan.yaml"
        path.write_text(yaml.safe_dump({"name": "history", "tasks": tasks}), encoding="utf-8")
        return supervisor.submit(supervisor.decompose(str(path))).run_id

    yield submit
    supervisor.stop()


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.event.type.value, e.event.task_id) for e in events]


# ----------------------------------------------------------------------------- the stream
def test_transitions_are_appended_in_order_and_heartbeats_are_not(
    shim_queue: TaskQueue,
    shim_settings: Settings,
    shim_connection: RedisConnectionManager,
    log: EventLog,
) -> None:
    """A claim and a completion append their events in the order they happened; a worker's
    registration is history, its heartbeats are not; adding a task appends nothing."""
    assert log.last_id() == START
    assert log.read() == EventBatch((), START)
    registry = WorkerRegistry(shim_connection, shim_settings)
    registry.register_worker(WorkerRegistration(id="w1"))
    shim_queue.add(sim("a"))
    assert kinds(log.read()) == [("registered", "")]
    registry.record_heartbeat("w1")
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    shim_queue.progress(claim.task.id, claim.token, 0.5, "half")
    shim_queue.complete(claim.task.id, claim.token, TaskResult(success=True))

    history = log.read()
    assert [e.event.type for e in history] == [
        EventType.REGISTERED,
        EventType.STARTED,
        EventType.PROGRESS,
        EventType.COMPLETED,
    ]
    assert history[2].event.progress is not None
    assert history[2].event.progress.message == "half"
    assert history[-1].event.status is TaskStatus.COMPLETE
    assert log.last_id() == history[-1].stream_id
    assert log.read(history[1].stream_id).events == history.events[2:]  # exclusive


def test_a_batch_of_transitions_is_one_entry(shim_queue: TaskQueue, log: EventLog) -> None:
    """Completing three tasks in one call appends one stream entry holding the three events."""
    shim_queue.add_many([sim(f"t{i}") for i in range(3)])
    claims = shim_queue.claim(["code"], worker_id="w", count=3)
    before = log.last_id()
    shim_queue.complete_many([(c.task.id, c.token, None) for c in claims])
    done = log.read(before)
    assert sorted(kinds(done)) == [("completed", f"t{i}") for i in range(3)]
    assert len({e.stream_id for e in done}) == 1


def test_wait_blocks_until_an_event_arrives_and_times_out_empty(
    shim_queue: TaskQueue, log: EventLog
) -> None:
    """``wait`` returns as soon as a transition is appended, and [] when none comes."""
    assert not log.wait(log.last_id(), 0.05)
    shim_queue.add(sim("late"))
    cursor = log.last_id()
    timer = threading.Timer(0.2, shim_queue.cancel, args=("late",))
    timer.start()
    try:
        got = log.wait(cursor, 10.0)
    finally:
        timer.join()
    assert kinds(got) == [("cancelled", "late")]


def test_follow_replays_the_history_then_new_events(shim_queue: TaskQueue, log: EventLog) -> None:
    """``follow`` yields what happened before it started, then what happens after."""
    shim_queue.add_many([sim("old"), sim("new")])
    shim_queue.cancel("old")
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        for item in log.follow(START, stop, timeout=0.05):
            seen.append(item.event.task_id)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_until(lambda: seen == ["old"])
        shim_queue.cancel("new")
        wait_until(lambda: seen == ["old", "new"])
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_entries_that_do_not_decode_still_move_the_cursor(
    shim_queue: TaskQueue, shim_settings: Settings, log: EventLog
) -> None:
    """A reader past the newest decodable event is past the bad entries after it too: a
    follower never reads them again (it span on them at full speed before)."""
    shim_queue.add(sim("ok"))
    shim_queue.cancel("ok")
    good = log.read()
    bad = shim_queue.client.xadd(Keys(shim_settings.namespace).events(), {"e": "[]"})
    batch = log.read(good.cursor)
    assert (batch.events, batch.cursor) == ((), bad)
    assert not log.wait(batch.cursor, 0.05)
    assert log.of_run("ok") == []


def test_an_entry_that_does_not_decode_is_skipped_and_counted(
    shim_queue: TaskQueue, shim_settings: Settings, log: EventLog
) -> None:
    """Hostile data in the stream never stops a reader: the entry is skipped and counted."""
    key = Keys(shim_settings.namespace).events()
    shim_queue.client.xadd(key, {"e": "{not json"})
    shim_queue.client.xadd(key, {"other": "x"})
    shim_queue.client.xadd(key, {"e": json.dumps({"id": "1", "type": "no-such-type"})})
    shim_queue.add(sim("ok"))
    shim_queue.cancel("ok")
    assert kinds(log.read()) == [("cancelled", "ok")]
    assert log.decode_errors == 3


def test_of_run_keeps_only_the_runs_tasks(shim_queue: TaskQueue, log: EventLog) -> None:
    """A run's history is its tasks' events (ids ``<run>:<plan id>``), across read batches."""
    tasks = [sim(f"r1:t{i}") for i in range(3)] + [sim("r2:t0"), sim("r10:t0")]
    shim_queue.add_many(tasks)
    for task in tasks:
        shim_queue.cancel(task.id)
    assert [e.event.task_id for e in log.of_run("r1")] == ["r1:t0", "r1:t1", "r1:t2"]
    assert [e.event.task_id for e in log.of_run("r10")] == ["r10:t0"]


# ------------------------------------------------------------------------------- readers
def test_the_progress_view_misses_nothing_between_its_read_and_its_follow(
    shim_queue: TaskQueue,
    shim_settings: Settings,
    shim_connection: RedisConnectionManager,
    shim_bus: Any,
    log: EventLog,
) -> None:
    """A view that follows the stream sees transitions at once without re-reading state: its
    full reconcile is seconds away, so only the stream can have told it."""
    registry = WorkerRegistry(shim_connection, shim_settings)
    shim_queue.add_many([sim("x"), sim("y")])
    view = ProgressAggregator(
        shim_bus, registry, shim_queue, ["x", "y"], reconcile_interval=30.0, history=log
    )
    view.start()
    try:
        claim = shim_queue.claim(["code"], worker_id="w")[0]
        shim_queue.complete(claim.task.id, claim.token)
        shim_queue.cancel("y")
        wait_until(lambda: view.get_overall_progress().finished, timeout=5)
        assert view.completion_order == ["x", "y"]
    finally:
        view.stop()


# ---------------------------------------------------------------------------- shim events
def test_shim_events_prints_a_runs_timeline(
    shim: Shim,
    target: list[str],
    run_of: Callable[[list[dict[str, Any]]], str],
    shim_fleet_factory: Callable[..., Fleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a run ended, ``shim events RUN`` prints its timeline by plan id, dependencies
    first; ``--json`` gives one object per event with its stream id."""
    monkeypatch.setenv("SHIM_SIM_SLOWDOWN", "0.001")
    run_id = run_of([{"id": "a", "executor": "sim"}, {"id": "b", "executor": "sim", "deps": ["a"]}])
    shim_fleet_factory(workers=1, mode="thread", heartbeat=0.5)
    code, out, err = shim("status", run_id, *target, "--watch")
    assert code == 0, err

    code, out, err = shim("events", run_id, *target)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    order = [(line[1], line[2]) for line in lines if line[1] in ("started", "completed")]
    assert order == [("started", "a"), ("completed", "a"), ("started", "b"), ("completed", "b")]
    assert any(line[1:3] == ["released", "b"] for line in lines)

    code, out, _ = shim("events", run_id, *target, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["task_id"] for r in rows} == {f"{run_id}:a", f"{run_id}:b"}
    assert all(r["stream_id"] for r in rows)

    code, out, _ = shim("events", *target)  # the namespace: worker events too
    assert "worker registered" in out
    assert f"{run_id}:a" in out


def test_shim_events_follow_ends_with_the_run(
    shim: Shim,
    target: list[str],
    run_of: Callable[[list[dict[str, Any]]], str],
    shim_fleet_factory: Callable[..., Fleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--follow`` prints the events as they happen and returns once every task is final."""
    monkeypatch.setenv("SHIM_SIM_SLOWDOWN", "0.001")
    run_id = run_of([{"id": "only", "executor": "sim"}])
    timer = threading.Timer(
        0.3, lambda: shim_fleet_factory(workers=1, mode="thread", heartbeat=0.5)
    )
    timer.start()
    try:
        code, out, err = shim("events", run_id, *target, "--follow")
    finally:
        timer.join()
    assert code == 0, err
    assert [line.split()[1] for line in out.splitlines() if "only" in line][-1] == "completed"


def test_shim_events_of_an_unknown_run_or_an_empty_history(
    shim: Shim, target: list[str], shim_settings: Settings
) -> None:
    """An unknown run is one error line (exit 2); an empty history says where it looked."""
    code, _, err = shim("events", "nosuchrun", *target)
    assert code == 2
    assert "run 'nosuchrun' not found" in err
    code, out, err = shim("events", *target)
    assert code == 0
    assert out == ""
    assert f"no events in namespace {shim_settings.namespace!r}" in err


def test_render_event_lines() -> None:
    """Worker events name the worker; failures carry their error."""
    from datetime import UTC, datetime

    from shim_core.cli.events import render_event

    when = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    crashed = ProgressEvent(id="1", type=EventType.CRASHED, worker_id="w1", timestamp=when)
    assert render_event(crashed).endswith("worker crashed    w1")
    failed = ProgressEvent(
        id="2",
        type=EventType.FAILED,
        task_id="r:t",
        worker_id="w1",
        attempt=3,
        completion=TaskResult(success=False, error="boom"),
    )
    line = render_event(failed, "r")
    assert line.startswith("--:--:--.---  failed     t ")
    assert line.endswith("error: boom")
