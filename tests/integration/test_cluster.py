"""Redis Cluster on real servers (three masters, three replicas on loopback): every script runs
through the cluster client, fleets in namespaces on different shards complete their work, and a
CLUSTER FAILOVER of a shard's master mid-run loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.doctor import check_invariants
from shim_core.keys import Keys
from shim_core.metrics import render
from shim_core.models import Task, TaskResult, TaskStatus, WorkerRegistration, WorkerStatus
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.scripts import sources
from tests.helpers import wait_until

pytestmark = pytest.mark.shim_real_redis


@pytest.fixture
def cluster_manager(shim_redis_cluster: Any) -> Iterator[RedisConnectionManager]:
    manager = RedisConnectionManager(shim_redis_cluster.url)
    manager.connect()
    yield manager
    manager.disconnect()


def test_every_script_runs_through_the_cluster_client(
    shim_redis_cluster: Any, cluster_manager: RedisConnectionManager
) -> None:
    settings = Settings(redis_url=shim_redis_cluster.url, namespace="scripts")
    queue = TaskQueue(cluster_manager, settings)
    registry = WorkerRegistry(cluster_manager, settings)
    registry.register_worker(WorkerRegistration(id="w1"), heartbeat_interval=60)
    registry.update_worker_status("w1", WorkerStatus.BUSY)
    queue.add_many([Task(id=f"t{i}") for i in range(6)] + [Task(id="late", dependencies=("t0",))])
    queue.add(Task(id="ag", executor="agent", params={"agent": "claude"}))
    assert len(queue.add_map(Task(type="mapped"), [{"n": 1}, {"n": 2}])) == 2
    assert queue.queued_count("mapped") == 2
    a, b, c, d, e, f = queue.claim(["code"], worker_id="w1", count=6, start=False)
    queue.start(a.task.id, a.token)
    queue.progress(a.task.id, a.token, 0.5, "half")
    assert queue.extend([(a.task.id, a.token)]) == []
    registry.record_heartbeat("w1", [(b.task.id, b.token)])
    queue.check_lease(a.task.id, a.token)
    settled = queue.settle([(a.task.id, a.token, None)], ["code"], worker_id="w1", count=1)
    assert settled.outcomes == [1]  # "late" became claimable
    durable = TaskQueue(cluster_manager, attrs.evolve(settings, wait_replicas=1))
    durable.complete(b.task.id, b.token)  # the script and its WAIT on the slot's master
    assert durable.unreplicated == 0
    queue.fail(c.task.id, c.token, "boom", permanent=True)
    assert queue.retry(c.task.id) is TaskStatus.PENDING
    queue.release(d.task.id, d.token)
    queue.reassign(d.task.id, None)
    queue.update(d.task.id, title="renamed")
    queue.cancel(e.task.id)
    claimed = queue.claim(["code"], worker_id="w2", count=10)
    agent = next(c for c in [*settled.claims, *claimed] if c.task.id == "ag")
    queue.throttle(agent.task.id, agent.token, "claude", TaskResult(success=False, error="429"))
    assert set(queue.cooldowns()) == {"claude"}  # read as shim status does
    queue.pause()
    queue.resume()
    queue.reap_stalled()
    registry.detect_crashed_workers()
    registry.unregister_worker("w1")
    queue.clean(0)
    queue.drain()
    assert check_invariants(queue.client, queue.keys) == []
    # The metrics read the namespace through the cluster client too.
    scrape = render(cluster_manager, settings)
    assert "shim_up 1.0" in scrape
    assert 'shim_workers{status="offline"} 1.0' in scrape
    # Each script was loaded on the master of the namespace's slot, which is where it ran.
    master = redis.Redis(port=shim_redis_cluster.master_of(Keys("scripts").prefix))
    loaded = dict(zip(sources(), master.script_exists(*(s.sha for s in _shas(queue))), strict=True))
    assert loaded == dict.fromkeys(sources(), True)
    assert f.token > a.token


def _shas(queue: TaskQueue) -> list[Any]:
    return [script for _source, script in queue.scripts._scripts.values()]


def _namespaces_on_two_shards(cluster: Any) -> tuple[str, str]:
    by_master: dict[int, str] = {}
    for n in range(50):
        name = f"shard{n}"
        by_master.setdefault(cluster.master_of(Keys(name).prefix), name)
        if len(by_master) >= 2:
            first, second = list(by_master.values())[:2]
            return first, second
    raise AssertionError("every namespace landed on one shard")


def test_fleets_on_two_shards_ride_out_a_failover_of_one_of_them(
    shim_redis_cluster: Any, tmp_path: Path
) -> None:
    cluster = shim_redis_cluster
    names = _namespaces_on_two_shards(cluster)
    fleets, tasks = [], {}
    try:
        for name in names:
            settings = Settings(redis_url=cluster.url, namespace=name)
            fleet = Fleet(settings, mode="process", heartbeat=0.5, log_dir=tmp_path / name)
            (tmp_path / name).mkdir()
            fleet.start(2)
            batch = [Task(id=f"r{i}", params={"duration": 0.02}) for i in range(40)]
            batch += [
                Task(id=f"c{i}", params={"duration": 0.02}, dependencies=(f"r{i}",))
                for i in range(40)
            ]
            fleet.queue.add_many(batch)
            fleets.append(fleet)
            tasks[name] = [t.id for t in batch]
        first = fleets[0]
        wait_until(lambda: first.queue.stats().complete >= 20, timeout=60)
        cluster.failover(Keys(names[0]).prefix)
        for fleet, name in zip(fleets, names, strict=True):
            wait_until(lambda fleet=fleet: fleet.queue.stats().complete == 80, timeout=120)
            final = fleet.queue.get_many(tasks[name])
            assert [t.status for t in final] == [TaskStatus.COMPLETE] * 80
            assert check_invariants(fleet.queue.client, fleet.queue.keys) == []
            # Liveness counts subscriptions on every node: no live worker looked dead.
            assert fleet.registry.get_workers_by_status(WorkerStatus.CRASHED) == []
    finally:
        for fleet in fleets:
            fleet.close()
