"""A Redis crash (SIGKILL) and restart under a connected manager loses no task."""

import logging
import time

import pytest

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue, TaskStatus
from shim_core.doctor import check_invariants
from shim_core.worker import Worker, WorkerConfig
from tests.helpers import wait_until


@pytest.mark.shim_real_redis
def test_redis_killed_and_restarted_loses_no_task(shim_redis_server_factory):
    """With appendonly, every acknowledged task survives a SIGKILL of redis-server and the same
    manager goes on working after the restart without being rebuilt."""
    server = shim_redis_server_factory(appendonly=True)
    manager = RedisConnectionManager(server.url)
    manager.connect()
    queue = TaskQueue(manager, Settings(redis_url=server.url, namespace="restart"))
    queue.add_many(
        [Task(id=f"t{i}") for i in range(200)] + [Task(id="after", dependencies=("t0",))]
    )
    held = queue.claim(["code"], worker_id="w1", count=10)

    server.kill()
    server.start()

    assert manager.ping()
    stats = queue.stats()
    assert (stats.pending, stats.active, stats.waiting) == (190, 10, 1)
    assert check_invariants(queue.client, queue.keys) == []
    first = next(c for c in held if c.task.id == "t0")
    assert queue.complete("t0", first.token) == 1  # leases survive too
    assert queue.get("after").status is TaskStatus.PENDING
    drained = 0
    while batch := queue.claim(["code"], count=50):
        for claim in batch:
            queue.complete(claim.task.id, claim.token)
        drained += len(batch)
    assert drained == 191
    manager.disconnect()


@pytest.mark.shim_real_redis
def test_blocked_claimer_survives_a_redis_restart(shim_redis_server_factory):
    """A claimer blocked in BZPOPMIN while Redis restarts still receives the next task."""
    import threading

    server = shim_redis_server_factory(appendonly=True)
    manager = RedisConnectionManager(server.url)
    manager.connect()
    queue = TaskQueue(manager, Settings(redis_url=server.url, namespace="restart"))
    result: list = []
    claimer = threading.Thread(target=lambda: result.extend(queue.claim(["code"], block=60)))
    claimer.start()
    server.kill()
    server.start()
    queue.add(Task(id="late"))
    claimer.join(timeout=60)
    assert [c.task.id for c in result] == ["late"]
    manager.disconnect()


def test_a_script_forgotten_twice_is_loaded_again(shim_queue, monkeypatch):
    """A restart can land between redis-py's reload of a forgotten script and its call: the
    call is made once more instead of failing (nothing ran in between)."""
    import redis

    client = shim_queue.client
    real = client.evalsha
    failures = iter([True, True])

    def flaky_evalsha(*args):
        if next(failures, False):
            raise redis.exceptions.NoScriptError("No matching script. Please use EVAL.")
        return real(*args)

    monkeypatch.setattr(client, "evalsha", flaky_evalsha)
    assert shim_queue.claim(["code"], worker_id="w") == []


@pytest.mark.shim_real_redis
def test_a_worker_logs_an_outage_once_and_works_on_after_it(shim_redis_server_factory, caplog):
    """Feed, heartbeat and reaper all fail while Redis is down; the worker says so in one line,
    one more when Redis answers again, and completes the work queued meanwhile."""
    server = shim_redis_server_factory(appendonly=True)
    manager = RedisConnectionManager(server.url, retries=0, connect_timeout=0.2)
    manager.connect()
    settings = Settings(redis_url=server.url, namespace="outage")
    queue = TaskQueue(manager, settings)
    config = WorkerConfig(
        default_executor="sim", heartbeat_interval=0.1, reap_interval=0.1, claim_block=0.1
    )
    worker = Worker(manager, settings, config)
    worker.start()
    try:
        caplog.set_level(logging.WARNING, logger="shim_core.worker")
        server.kill()
        time.sleep(2.0)  # dozens of failed beats, reaper passes and claims
        server.start()
        queue.add(Task(id="after-outage", params={"duration": 0}))
        wait_until(lambda: queue.get("after-outage").status is TaskStatus.COMPLETE, timeout=30)
    finally:
        worker.stop(grace=2)
        manager.disconnect()
    down = [r.getMessage() for r in caplog.records if "retrying quietly" in r.getMessage()]
    back = [r.getMessage() for r in caplog.records if "Redis answers again" in r.getMessage()]
    assert worker.outage.outages == len(down)
    assert 1 <= len(down) <= 3, down  # one per outage; a component may trip once on reconnect
    assert len(back) == len(down)
    assert all(int(m.split("(")[1].split()[0]) >= 1 for m in back)  # the failures were counted
