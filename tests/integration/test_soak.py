"""Soak: a fleet of real worker processes drains a large queue while one worker after another
is SIGKILLed and replaced. Nothing is lost or completed twice, the namespace passes the invariant
checker, a surviving worker's memory stays flat, and Redis gives back its memory once the
finished work is cleaned.

The default run is CI-sized (``SHIM_SOAK_TASKS``, default 400); the full soak of the issue,
20,000 tasks, is marked slow: ``pytest -m slow tests/integration/test_soak.py --no-cov -n 0``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shim_core.bus import MessageBus
from shim_core.doctor import check_invariants
from shim_core.models import Task
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.retention import Retention
from tests.integration.test_fleet import CompletionLog

CI_TASKS = int(os.environ.get("SHIM_SOAK_TASKS", "400"))


def rss_kib(pid: int) -> int:
    """Resident memory of a process (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")  # pragma: no cover - Linux always has it


class Killer(threading.Thread):
    """SIGKILLs a random worker (never the survivor) every ``every`` seconds, adds another."""

    def __init__(self, fleet: Any, survivor: Any, every: float) -> None:
        super().__init__(daemon=True)
        self.fleet, self.survivor, self.every = fleet, survivor, every
        self.kills = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.wait(self.every):
            victims = [w for w in self.fleet.workers if w is not self.survivor and w.alive()]
            if victims:
                rng.choice(victims).kill()
                self.kills += 1
                self.fleet.add_worker(wait=False)


@pytest.mark.shim_real_redis
@pytest.mark.parametrize(
    "tasks",
    [pytest.param(CI_TASKS, id="ci"), pytest.param(20_000, id="full", marks=pytest.mark.slow)],
)
def test_a_fleet_under_repeated_sigkill_loses_nothing_and_stays_small(
    tasks: int,
    shim_fleet_factory: Any,
    shim_queue: TaskQueue,
    shim_bus: MessageBus,
) -> None:
    client = shim_queue.client
    baseline = client.info("memory")["used_memory"]
    completions = CompletionLog(shim_bus)
    fleet = shim_fleet_factory(workers=3, heartbeat=0.5)
    survivor = fleet.workers[0]
    batch = [
        Task(id=f"s{i}", type="code", executor="sim", params={"duration": 0.002, "steps": 1})
        for i in range(tasks)
    ]
    for i in range(0, tasks, 1000):
        shim_queue.add_many(batch[i : i + 1000])
    killer = Killer(fleet, survivor, every=1.0)
    samples: list[int] = []
    peak = baseline
    started = time.monotonic()
    killer.start()
    try:
        deadline = time.monotonic() + 60 + tasks / 20
        while shim_queue.stats().complete < tasks:
            assert time.monotonic() < deadline, f"stuck: {shim_queue.stats().by_type}"
            assert survivor.pid is not None
            samples.append(rss_kib(survivor.pid))
            peak = max(peak, client.info("memory")["used_memory"])
            time.sleep(0.25)
    finally:
        killer.stop.set()
        killer.join()
    fleet.wait_idle(timeout=60)

    assert killer.kills >= 1
    stats = shim_queue.stats()
    assert (stats.complete, stats.failed, stats.cancelled) == (tasks, 0, 0)
    assert check_invariants(client, shim_queue.keys) == []
    wait_until_counted = time.monotonic() + 10
    while len(completions.counts) < tasks and time.monotonic() < wait_until_counted:
        time.sleep(0.05)
    assert sorted(completions.counts) == sorted(t.id for t in batch)
    assert set(completions.counts.values()) == {1}  # each completed exactly once

    # The surviving worker's memory is flat once warm: the last quarter of the samples is
    # within 25 % (and 3 MiB) of the second quarter's peak.
    if len(samples) >= 8:
        warm = max(samples[len(samples) // 4 : len(samples) // 2])
        assert max(samples[-len(samples) // 4 :]) <= warm * 1.25 + 3 * 1024, samples

    removed = Retention(shim_queue, WorkerRegistry(shim_queue.connection, shim_queue.settings))
    report = removed.clean(grace_ms=0)
    assert report.tasks == tasks
    after = client.info("memory")["used_memory"]
    print(  # shown with -s: the figures of the soak
        f"soak: {tasks} tasks in {time.monotonic() - started:.1f} s, {killer.kills} workers "
        f"SIGKILLed; survivor RSS {samples[0]} -> {samples[-1]} KiB (peak {max(samples)}); "
        f"Redis used_memory {baseline} -> peak {peak} -> {after} bytes after clean"
    )
    assert after < baseline + 2 * 1024 * 1024, (baseline, after)  # nothing per task is left
