"""Data read from Redis is untrusted: a corrupt task fails alone, at once, saying which field;
`shim doctor` names it; results, log lines, progress messages and checkpoints have size limits."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from shim_core.bus import MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.doctor import check_invariants
from shim_core.errors import CorruptTask, ValidationError
from shim_core.models import EventType, ProgressEvent, Task, TaskStatus
from shim_core.queue import TaskQueue
from shim_core.worker import Worker, WorkerConfig, WorkExecutor
from shim_core.worker.context import MAX_LOG_LINE_CHARS, MAX_PROGRESS_MESSAGE_CHARS
from shim_plugins.checkpoints.redis_backend import RedisCheckpointBackend
from tests.helpers import wait_until
from tests.integration.test_worker_components import FnExecutor, claim_as, plugins_with, run


@pytest.fixture
def worker(shim_connection: RedisConnectionManager, shim_settings: Settings) -> Iterator[Worker]:
    config = WorkerConfig(types=("code",), default_executor="sim", claim_block=0.1)
    running = Worker(shim_connection, shim_settings, config)
    running.start()
    yield running
    running.stop(grace=2)


def test_a_corrupt_task_fails_at_once_naming_the_field_and_the_worker_goes_on(
    shim_queue: TaskQueue, shim_bus: MessageBus, worker: Worker
) -> None:
    failed: list[ProgressEvent] = []
    seen = threading.Event()

    def on_failed(event: ProgressEvent, _channel: str) -> None:
        failed.append(event)
        seen.set()

    shim_bus.subscribe("task:failed", on_failed)
    shim_queue.pause()  # corrupted before any worker can claim it
    shim_queue.add_many([Task(id=t, type="code", params={"duration": 0}) for t in "abc"])
    shim_queue.client.hset(shim_queue.keys.task("b"), "params", "{not json")
    shim_queue.resume()
    for tid in "ac":
        wait_until(lambda tid=tid: shim_queue.get(tid).status is TaskStatus.COMPLETE)  # type: ignore[union-attr]
    raw = wait_until(
        lambda: (
            shim_queue.client.hget(shim_queue.keys.task("b"), "status") == "failed"
            and shim_queue.client.hmget(shim_queue.keys.task("b"), "attempts", "result")
        )
    )
    attempts, result = raw
    assert attempts == "1"  # failed for good at once, not retried for minutes
    assert json.loads(result)["error"].startswith("corrupt task data: params (not JSON")
    assert seen.wait(5)
    assert failed[0].task_id == "b"
    assert failed[0].type is EventType.FAILED

    problems = [str(v) for v in check_invariants(shim_queue.client, shim_queue.keys)]
    assert problems == [problems[0]]
    assert problems[0].startswith("b: cannot be decoded: corrupt task data: params (not JSON")


def test_a_result_over_the_payload_limit_is_refused_with_its_size(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    queue = TaskQueue(shim_connection, attrs.evolve(shim_settings, max_payload_bytes=10_000))
    big = FnExecutor("big", fn=lambda task, ctx: "x" * 20_000)
    queue.add(Task(id="r1", type="code", executor="big", max_attempts=1))
    wx = WorkExecutor(queue, plugins_with(big), None, worker_id="w1")
    _, outcome = run(wx, claim_as(queue, "w1"))
    assert outcome.status == "failed"
    assert "over the 10000-byte limit" in (outcome.result.error or "")
    stored = queue.get("r1")
    assert stored is not None
    assert stored.result is not None
    assert stored.result.output is None


def test_long_log_lines_and_progress_messages_are_cut(shim_queue: TaskQueue) -> None:
    def chatty(task: Task, ctx: Any) -> str:
        ctx.log.info("%s", "y" * (MAX_LOG_LINE_CHARS * 3))
        ctx.progress(0.5, "z" * (MAX_PROGRESS_MESSAGE_CHARS * 5))
        return "ok"

    shim_queue.add(Task(id="l1", type="code", executor="chatty"))
    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("chatty", fn=chatty)), None, worker_id="w"
    )
    claim = claim_as(shim_queue, "w")
    execution = wx.prepare(claim)
    try:
        run_result = wx.run(execution)
    finally:
        execution.close()  # flushes the log
    message = shim_queue.get("l1").progress_message  # type: ignore[union-attr]
    assert run_result.result.success
    assert message.endswith(f"({MAX_PROGRESS_MESSAGE_CHARS * 4} more characters)")
    lines = shim_queue.client.lrange(shim_queue.keys.log("l1"), 0, -1)
    assert len(lines) == 1
    assert len(lines[0]) < MAX_LOG_LINE_CHARS + 200
    assert re.search(r"\.\.\. \(\d+ more characters\)$", lines[0][-40:])


def test_a_checkpoint_over_the_limit_is_refused_and_the_task_goes_on(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    settings = attrs.evolve(shim_settings, max_payload_bytes=1_000)
    queue = TaskQueue(shim_connection, settings)
    store = CheckpointStore(RedisCheckpointBackend(queue.client, queue.keys), queue)
    queue.add(Task(id="c1", type="code"))
    claim = claim_as(queue, "w1")
    with pytest.raises(ValidationError, match="checkpoint of task 'c1' is 2011 bytes"):
        store.save("c1", claim.token, {"blob": "q" * 2000})

    def saves(task: Task, ctx: Any) -> str:
        return ctx.checkpoint({"blob": "q" * 2000}) or "refused"

    wx = WorkExecutor(
        queue, plugins_with(FnExecutor("code", ("code",), saves)), store, worker_id="w1"
    )
    _, outcome = run(wx, claim)
    assert outcome.status == "complete"
    assert outcome.result.output == "refused"
    assert store.latest("c1") is None


def test_a_non_finite_progress_in_a_task_is_named_corrupt(shim_queue: TaskQueue) -> None:
    """``progress nan`` written behind SHIM's back makes the task corrupt, named, not a NaN
    handed to every view."""
    shim_queue.add(Task(id="t", type="code"))
    shim_queue.client.hset(shim_queue.keys.task("t"), "progress", "nan")
    with pytest.raises(CorruptTask, match="'t' is corrupt: not a finite number"):
        shim_queue.states(["t"])


def test_one_corrupt_worker_record_leaves_the_others_listed(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A worker hash that does not decode is left out of the lists (and logged), so every
    view of the fleet still shows the other workers."""
    from shim_core.models import WorkerRegistration
    from shim_core.registry import WorkerRegistry

    registry = WorkerRegistry(shim_connection, shim_settings)
    registry.register_worker(WorkerRegistration(id="good"))
    registry.register_worker(WorkerRegistration(id="bad"))
    registry.client.hset(registry.keys.worker("bad"), "tasks_completed", "many")
    assert [w.id for w in registry.all_workers()] == ["good"]
    assert [w.id for w in registry.get_active_workers()] == ["good"]


def test_counters_changed_by_hand_to_text_fail_no_script(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """A field the scripts count with, set to text in Redis, must not fail the script that
    reads it: one such task would stop every claim of its queue, or a batch of completions.
    Each script reads it as a safe default instead."""
    from shim_core.models import TaskResult, WorkerRegistration
    from shim_core.registry import WorkerRegistry

    q, client, keys = shim_queue, shim_queue.client, shim_queue.keys
    registry = WorkerRegistry(shim_connection, shim_settings)
    registry.register_worker(WorkerRegistration(id="w1"), heartbeat_interval=60)
    q.add_many(
        [
            Task(id="odd", priority="high"),
            Task(id="fine"),
            Task(id="seq-kid", dependencies=("fine",)),
            Task(id="count-kid", dependencies=("fine",)),
        ]
    )
    client.hset(keys.task("odd"), "attempts", "x")
    client.hset(keys.task("seq-kid"), "seq", "x")
    client.hset(keys.task("count-kid"), "deps_left", "x")
    client.hset(keys.cooldowns, "claude", "x")
    client.hset(keys.worker("w1"), mapping={"tasks_completed": "x", "interval_ms": "x"})
    odd, fine = q.claim(["code"], worker_id="w1", count=2)  # the claim counts attempts anew
    assert (odd.task.id, odd.task.attempts, fine.task.id) == ("odd", 1, "fine")
    client.hset(keys.task("fine"), "claimed_at", "x")
    assert registry.record_heartbeat("w1", [(fine.task.id, fine.token)]) == []
    q.complete("fine", fine.token, TaskResult(success=True))

    def status(task_id: str) -> str:
        return str(client.hget(keys.task(task_id), "status"))

    assert status("fine") == "complete"  # (its hash still holds the text: get() refuses it)
    assert status("seq-kid") == "pending"  # released, its score from seq 0
    assert status("count-kid") == "waiting"  # never run before its count says so
    client.hset(keys.task("odd"), mapping={"stalls": "x", "max_stalled": "x"})
    client.zadd(keys.active, {"odd": 1})  # its lease long expired
    assert q.reap_stalled() == {"odd": TaskStatus.FAILED}  # counted anew: 1 > max_stalled 0
