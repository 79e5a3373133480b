"""`shim clean` keeps a long-lived namespace the size of its work: finished tasks, dead worker
records, finished runs and the leftovers of removed tasks go; live work stays."""

from __future__ import annotations

import json

from click.testing import CliRunner

from shim_core.cli import app
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import Task, WorkerRegistration, WorkerStatus
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.retention import CleanReport, Retention
from shim_core.worker.recovery import RecoveryReport, RecoveryTotals


def _run(queue: TaskQueue, run_id: str, task_ids: list[str]) -> None:
    queue.client.hset(queue.keys.run(run_id), mapping={"task_ids": json.dumps(task_ids)})
    queue.client.zadd(queue.keys.runs, {run_id: 1})


def _finish(queue: TaskQueue, *task_ids: str) -> None:
    for claim in queue.claim(["code"], count=len(task_ids)):
        queue.complete(claim.task.id, claim.token)


def test_clean_removes_what_is_past_retention_and_keeps_live_work(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    queue, keys, client = shim_queue, shim_queue.keys, shim_queue.client
    registry = WorkerRegistry(shim_connection, shim_settings)
    queue.add_many([Task(id="done-1", type="code"), Task(id="done-2", type="code")])
    _finish(queue, "done-1", "done-2")
    queue.add(Task(id="live", type="code"))
    _run(queue, "old-run", ["done-1", "done-2"])
    _run(queue, "live-run", ["done-1", "live"])
    for worker_id, status in (("gone", WorkerStatus.CRASHED), ("left", WorkerStatus.OFFLINE)):
        registry.register_worker(WorkerRegistration(id=worker_id), heartbeat_interval=60)
        registry.update_worker_status(worker_id, status)
    registry.register_worker(WorkerRegistration(id="alive"), heartbeat_interval=60)
    client.sadd(f"{keys.prefix}ckpt-session:s-old", "done-1", "removed-long-ago")
    client.sadd(f"{keys.prefix}ckpt-session:s-live", "live", "removed-long-ago")
    client.rpush(keys.log("removed-long-ago"), "a line")
    client.rpush(keys.ckpt("removed-long-ago"), "{}")
    client.rpush(keys.log("live"), "a line of a live task")

    report = Retention(queue, registry).clean(grace_ms=0)

    assert report == CleanReport(tasks=2, workers=2, runs=1, sessions=1, orphans=2)
    assert queue.get("live") is not None
    assert client.exists(keys.run("live-run")) == 1
    assert client.zrange(keys.runs, 0, -1) == ["live-run"]
    assert [w.id for w in registry.all_workers()] == ["alive"]
    assert client.smembers(f"{keys.prefix}ckpt-session:s-live") == {"live"}
    assert client.exists(f"{keys.prefix}ckpt-session:s-old") == 0
    assert client.exists(keys.log("removed-long-ago"), keys.ckpt("removed-long-ago")) == 0
    assert client.exists(keys.log("live")) == 1
    assert "removed 2 finished task(s)" in str(report)


def test_clean_keeps_everything_within_retention(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    shim_queue.add(Task(id="done", type="code"))
    _finish(shim_queue, "done")
    _run(shim_queue, "recent", ["done"])
    shim_queue.client.zadd(shim_queue.keys.runs, {"recent": 10**13})  # created "now"
    report = Retention(shim_queue, WorkerRegistry(shim_connection, shim_settings)).clean()
    assert report == CleanReport()


def test_the_clean_command_says_what_it_removed(
    shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    _run(shim_queue, "empty-run", ["never-added"])
    result = CliRunner().invoke(
        app,
        ["clean", "--redis", shim_settings.redis_url, "--namespace", shim_settings.namespace],
        env={"SHIM_RETENTION_MS": "0"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert "1 run record(s)" in result.output


def test_recovery_totals_are_counts_that_do_not_grow_with_history() -> None:
    report = RecoveryReport(
        reassigned_tasks=["a", "b"],
        failed_tasks=["c"],
        stalled_tasks=["a"],
        resumed_from_checkpoint={"a": True, "b": False},
    )
    totals = RecoveryTotals().plus(report).plus(report)
    assert totals == RecoveryTotals(
        reassigned_tasks=4, failed_tasks=2, stalled_tasks=2, resumed_from_checkpoint=2
    )
