"""Sentinel failover on real servers (a master, a replica, three sentinels on loopback): clients
follow +switch-master at once, and a fleet that goes through two failovers mid-run loses nothing
and runs again only what was in flight (fencing tokens that never repeat across a failover are
tested in test_queue_claim.py)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import redis

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.doctor import check_invariants
from shim_core.models import Task, TaskStatus
from tests.helpers import wait_until

pytestmark = pytest.mark.shim_real_redis


def test_a_fleet_goes_through_two_failovers_without_losing_or_repeating_work(
    shim_sentinel_group: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task completes once in the final state; with SHIM_WAIT_REPLICAS=1 an acknowledged
    completion survives the failover, so the only tasks that run twice are those in flight when
    the master changed (at most one per worker thread and failover)."""
    group = shim_sentinel_group
    monkeypatch.setenv("SHIM_WAIT_REPLICAS", "1")
    settings = Settings(redis_url=group.url, namespace="failover", wait_replicas=1)
    runs = tmp_path / "runs.log"

    def task(task_id: str, deps: tuple[str, ...] = ()) -> Task:
        command = f"sleep 0.05; echo {task_id} >> {runs}"
        return Task(id=task_id, executor="shell", params={"command": command}, dependencies=deps)

    roots = [task(f"r{i}") for i in range(20)]
    children = [task(f"c{i}", (f"r{i}",)) for i in range(20)]
    everything = roots + children
    fleet = Fleet(settings, mode="process", heartbeat=0.5, log_dir=tmp_path, allow=["shell"])
    try:
        fleet.start(3)
        fleet.queue.add_many(everything)
        done = lambda n: fleet.queue.stats().complete >= n  # noqa: E731
        wait_until(lambda: done(10), timeout=60)
        group.failover()
        wait_until(lambda: done(25), timeout=60)
        group.failover()
        wait_until(lambda: done(len(everything)), timeout=120)
        fleet.wait_idle(timeout=30)
        queue = fleet.queue
        final = queue.get_many(t.id for t in everything)
        assert [t.status for t in final] == [TaskStatus.COMPLETE] * len(everything)
        assert check_invariants(queue.client, queue.keys) == []
        assert queue.unreplicated == 0
        assert fleet.connection.failovers >= 2  # followed +switch-master, both times
        assert redis.Redis(port=group.current_master_port()).exists(queue.keys.task("c19")) == 1
    finally:
        fleet.close()
    executions = collections.Counter(runs.read_text().split())
    assert set(executions) == {t.id for t in everything}  # nothing lost
    repeated = {tid: n for tid, n in executions.items() if n > 1}
    print(f"sentinel: 2 failovers, {len(everything)} tasks, run twice: {sorted(repeated)}")
    assert len(repeated) <= 2 * 3  # in flight at a failover: one per worker, per failover
