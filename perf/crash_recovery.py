"""Crash recovery of a real worker fleet, and the cost of heartbeats and crash scans.

1. **SIGKILL → restart** at the default settings (heartbeat 10 s, reap interval 0.5 s, liveness
   grace 1 s): a fleet of 3 ``shim worker`` processes. Each sample adds a ``sim`` task (60 s, 60
   progress steps), waits until a worker runs it and its first progress event arrived, SIGKILLs
   that worker at t0, and takes t1 when ``task:started`` with ``attempt == 2`` arrives for the
   task (another worker claimed it). Then the task is cancelled and a replacement worker is added,
   so the fleet stays at 3. A task not restarted within 60 s counts as lost.
2. **Hung worker** (SIGSTOP): same, but the holder is frozen instead of killed, so its sockets
   stay open and only the heartbeat deadline (3 missed beats) gives it away. Sampled at heartbeat
   1 s and 10 s. Afterwards the frozen worker is resumed (SIGCONT). Its log must show its late
   result refused, and the task must still run on the new holder.
3. **Heartbeat cost**: ``WorkerRegistry.record_heartbeat`` of one registered worker holding 0, 1
   and 10 leases. Round trips and server commands per beat (as in ``roundtrips.py``) are averaged
   over 100 beats; µs per beat over 1,000 more.
4. **Crash scan over 10,000 registered workers**: ``detect_crashed_workers`` by heartbeat
   deadline only (``use_liveness=False``) and with the liveness check (``PUBSUB NUMSUB`` of all
   10,000 ``alive:<id>`` channels; one helper connection subscribes to all of them, so every
   worker looks alive). First when none has crashed, then the pass that declares 100 overdue
   workers crashed. The last row repeats that pass with 10,000 running tasks (held by other, live
   workers) in the ``active`` set.

Run: ``PYTHONPATH=. python perf/crash_recovery.py`` (about 2.5 minutes; ``--quick`` under 1).
``--only kill,hang,beat,scan`` picks parts; ``--kills N`` sets the SIGKILL samples.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis
from _server import add_server_args, describe, purge, redis_url
from drain import percentile
from roundtrips import Meter, RoundTripCounter

from pytest_shim.fleet import Fleet, FleetWorker
from shim_core.bus import Channels, MessageBus
from shim_core.config import DEFAULT_HEARTBEAT_INTERVAL, Settings
from shim_core.connection import RedisConnectionManager
from shim_core.keys import Keys
from shim_core.models import ProgressEvent, Task, WorkerCapabilities, WorkerStatus
from shim_core.queue import TaskQueue
from shim_core.registry import MISSED_BEATS, RESTART_GRACE_S, WorkerRegistry
from shim_core.worker import WorkerConfig

FLEET_SIZE = 3
#: A killed task that has not started again after this many seconds counts as lost.
LOST_AFTER_S = 60.0
#: Seconds to wait for the first progress event of a probe task.
FIRST_PROGRESS_TIMEOUT = 30.0
SCAN_WORKERS = 10_000
OVERDUE = 100
REGISTER_BATCH = 1_000
BEATS = 100
TIMED_BEATS = 1_000
#: The workers' default reaper interval (``shim worker`` has no option for it).
REAP_INTERVAL = WorkerConfig().reap_interval
PARTS = ("kill", "hang", "beat", "scan")


def stamp() -> str:
    return str(time.time_ns() // 1_000_000 % 10**8)


# --------------------------------------------------------------------------- event watching
class Watcher:
    """Remembers the task events and worker crashes seen on the bus, and when they arrived.

    ``worker:crashed`` is read with a plain redis-py subscriber, not the MessageBus: its
    ``"status":"crashed"`` is no TaskStatus, so the bus drops the event as undecodable.
    """

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.bus = MessageBus(connection, settings)
        self._events: dict[str, list[tuple[float, ProgressEvent]]] = defaultdict(list)
        self._crashes: dict[str, list[float]] = defaultdict(list)
        self._cond = threading.Condition()
        for channel in (Channels.TASK_STARTED, Channels.TASK_PROGRESS):
            self.bus.subscribe(channel, self._on_event)
        self._raw = redis.Redis.from_url(connection.url, decode_responses=True)
        self._pubsub: Any = self._raw.pubsub(ignore_subscribe_messages=True)
        channel = Keys(settings.namespace).channel(Channels.WORKER_CRASHED)
        self._pubsub.subscribe(**{channel: self._on_crash})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _on_crash(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        worker_id = json.loads(message["data"]).get("worker_id", "")
        with self._cond:
            self._crashes[worker_id].append(now)
            self._cond.notify_all()

    def _on_event(self, event: ProgressEvent, _channel: str) -> None:
        now = time.monotonic()
        with self._cond:
            self._events[event.task_id].append((now, event))
            self._cond.notify_all()

    def first(
        self,
        key: str,
        match: Callable[[ProgressEvent], bool],
        timeout: float,
        poll: Callable[[], bool] | None = None,
    ) -> float | None:
        """Arrival time (monotonic) of the first event of ``key`` that matches, or None.

        ``poll`` is a fallback check, run about once a second, in case the bus missed the event;
        when it answers True, the time of that check is returned.
        """
        deadline = time.monotonic() + timeout
        next_poll = time.monotonic() + 1.0
        with self._cond:
            while True:
                for when, event in self._events.get(key, ()):
                    if match(event):
                        return when
                now = time.monotonic()
                if now >= deadline:
                    return None
                if poll is not None and now >= next_poll:
                    self._cond.release()
                    try:
                        found = poll()
                    finally:
                        self._cond.acquire()
                    if found:
                        return time.monotonic()
                    next_poll = time.monotonic() + 1.0
                self._cond.wait(min(0.1, deadline - now))

    def crashed_at(self, worker_id: str, since: float, timeout: float) -> float | None:
        """Arrival time of the first ``worker:crashed`` event of ``worker_id`` after ``since``
        (a resumed worker registers again under its id, so it may crash more than once)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [t for t in self._crashes.get(worker_id, ()) if t >= since]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(0.1, left))

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._raw.close()
        self.bus.close()


def probe_task(prefix: str, n: int, duration: float) -> Task:
    return Task(
        id=f"{prefix}-{n}",
        title="crash probe",
        executor="sim",
        params={"duration": duration, "progress_steps": int(duration)},
    )


def wait_running(fleet: Fleet, watcher: Watcher, task_id: str) -> FleetWorker:
    """The fleet worker running ``task_id`` once its first progress event has arrived."""
    if watcher.first(task_id, lambda e: e.type.value == "progress", FIRST_PROGRESS_TIMEOUT) is None:
        raise TimeoutError(f"task {task_id} made no progress within {FIRST_PROGRESS_TIMEOUT} s")
    holder = fleet.worker_running(task_id)
    if holder is None:
        raise RuntimeError(f"task {task_id} is not running on a fleet worker")
    return holder


def restarted(queue: TaskQueue, task_id: str) -> Callable[[], bool]:
    def check() -> bool:
        task = queue.get(task_id)
        return task is not None and task.attempts >= 2 and task.status.value == "running"

    return check


def is_restart(event: ProgressEvent) -> bool:
    return event.type.value == "started" and event.attempt == 2


# ------------------------------------------------------------------------------ 1. SIGKILL
@attrs.frozen
class KillSample:
    restart_s: float | None  # t1 - t0, None: lost
    detect_s: float | None  # t0 -> worker:crashed event
    reason: str
    polled: bool  # t1 came from the polling fallback, not from the bus


def kill_samples(
    fleet: Fleet, watcher: Watcher, kills: int, tag: str, rng: random.Random
) -> list[KillSample]:
    samples: list[KillSample] = []
    queue = fleet.queue
    for n in range(kills):
        task = fleet.queue.add(probe_task(f"kill{tag}", n, 60))
        holder = wait_running(fleet, watcher, task.id)
        time.sleep(rng.uniform(0, REAP_INTERVAL))  # no fixed phase against the reapers
        t0 = time.monotonic()
        holder.kill()
        via_poll: list[bool] = []
        check = restarted(queue, task.id)

        def poll(check: Callable[[], bool] = check, via_poll: list[bool] = via_poll) -> bool:
            found = check()
            if found:
                via_poll.append(True)
            return found

        t1 = watcher.first(task.id, is_restart, LOST_AFTER_S, poll=poll)
        td = watcher.crashed_at(holder.id, t0, 0 if t1 is None else 5)
        reason = (
            fleet.connection.get_client().hget(
                Keys(fleet.settings.namespace).worker(holder.id), "crash_reason"
            )
            or "-"
        )
        samples.append(
            KillSample(
                None if t1 is None else t1 - t0,
                None if td is None else td - t0,
                reason,
                bool(via_poll),
            )
        )
        queue.cancel(task.id, "perf: sample done")
        fleet.add_worker()
        shown = "LOST" if t1 is None else f"{t1 - t0:.3f} s"
        print(f"  kill {n + 1:>2}/{kills}: restarted after {shown} ({reason})", flush=True)
    return samples


# --------------------------------------------------------------------------------- 2. hang
@attrs.frozen
class HangSample:
    heartbeat: float
    restart_s: float | None
    detect_s: float | None
    reason: str
    late_result: str  # what the resumed worker logged about its late result
    late_line: str  # that log line, without its time stamp
    still_on_new_holder: bool  # after the late result, the task still runs on the new worker


def hang_samples(
    fleet: Fleet,
    watcher: Watcher,
    count: int,
    tag: str,
    rng: random.Random,
    *,
    resume_wait: float = 15.0,
) -> list[HangSample]:
    samples: list[HangSample] = []
    queue = fleet.queue
    limit = fleet.heartbeat * MISSED_BEATS + 30
    for n in range(count):
        task = queue.add(probe_task(f"hang{tag}", n, max(120.0, limit * 2)))
        holder = wait_running(fleet, watcher, task.id)
        time.sleep(rng.uniform(0, fleet.heartbeat))  # no fixed phase against the heartbeats
        t0 = time.monotonic()
        holder.pause()
        t1 = watcher.first(task.id, is_restart, limit, poll=restarted(queue, task.id))
        td = watcher.crashed_at(holder.id, t0, 0 if t1 is None else 5)
        keys = Keys(fleet.settings.namespace)
        reason = fleet.connection.get_client().hget(keys.worker(holder.id), "crash_reason") or "-"
        new_holder = queue.get(task.id)
        holder.resume()
        late, line = wait_late_result(holder, task.id, resume_wait)
        after = queue.get(task.id)
        still = (
            new_holder is not None
            and after is not None
            and after.status.value == "running"
            and after.worker_id == new_holder.worker_id
            and after.worker_id != holder.id
        )
        samples.append(
            HangSample(
                fleet.heartbeat,
                None if t1 is None else t1 - t0,
                None if td is None else td - t0,
                reason,
                late,
                line,
                still,
            )
        )
        queue.cancel(task.id, "perf: sample done")
        shown = "NOT RESTARTED" if t1 is None else f"{t1 - t0:.3f} s"
        print(
            f"  hang {n + 1}/{count} (heartbeat {fleet.heartbeat:g} s): restarted after {shown}; "
            f"resumed worker: {late}",
            flush=True,
        )
    return samples


def wait_late_result(worker: FleetWorker, task_id: str, timeout: float) -> tuple[str, str]:
    """What the resumed worker's log says about its result of ``task_id``, and the line."""
    deadline = time.monotonic() + timeout
    while True:
        for line in worker.log().splitlines():
            if task_id in line and ("refused" in line or "not recorded" in line):
                verdict = "refused" if "refused" in line else "not recorded"
                return verdict, line.split(" ", 2)[-1]
        if time.monotonic() > deadline:
            return "no late result logged", ""
        time.sleep(0.1)


# ---------------------------------------------------------------------------- 3. heartbeat
@attrs.frozen
class BeatRow:
    leases: int
    round_trips: float
    commands: float
    top: str
    us_per_beat: float


def heartbeat_cost(url: str) -> list[BeatRow]:
    namespace = f"beat{stamp()}"
    settings = Settings(redis_url=url, namespace=namespace)
    manager = RedisConnectionManager(url)
    registry = WorkerRegistry(manager, settings)
    queue = TaskQueue(manager, settings)
    probe = redis.Redis.from_url(url, decode_responses=True)
    counter = RoundTripCounter()
    counter.install(registry.client)
    meter = Meter(counter, probe)
    worker_id = "beat-worker"
    rows: list[BeatRow] = []
    try:
        registry.scripts.call(
            "register",
            [Keys(namespace).worker(worker_id), registry.keys.workers, registry.keys.worker_ids],
            [registry.keys.prefix, worker_id, 3_600_000, MISSED_BEATS, "{}"],
        )
        queue.add_many([Task(id=f"beat-{i}", type="beat") for i in range(11)])
        one = queue.claim(["beat"], worker_id=worker_id, count=1, lease_ms=3_600_000)
        ten = queue.claim(["beat"], worker_id=worker_id, count=10, lease_ms=3_600_000)
        for held in ([], one, ten):
            leases = [(c.task.id, c.token) for c in held]
            status = WorkerStatus.BUSY if leases else WorkerStatus.IDLE

            def beat(leases: list[tuple[str, int]] = leases, status: WorkerStatus = status) -> None:
                lost = registry.record_heartbeat(worker_id, leases, status=status)
                if lost:
                    raise RuntimeError(f"leases lost during the heartbeat benchmark: {lost}")

            for _ in range(20):
                beat()
            meter.measure(f"{len(leases)}", lambda beat=beat: [beat() for _ in range(BEATS)], BEATS)
            start = time.perf_counter()
            for _ in range(TIMED_BEATS):
                beat()
            us = (time.perf_counter() - start) / TIMED_BEATS * 1e6
            row = meter.rows[-1]
            rows.append(BeatRow(len(leases), row.round_trips, row.commands, row.top, us))
    finally:
        purge(probe, Keys(namespace).prefix + "*")
        probe.close()
        manager.disconnect()
    return rows


# ------------------------------------------------------------------------------ 4. scan
@attrs.frozen
class ScanRow:
    what: str
    median_ms: float
    samples_ms: list[float]
    crashed: int  # workers declared crashed per pass
    commands: int  # server commands of one pass (INFO commandstats delta)
    script_ms: float  # server time of the scan script in one pass (fcall + evalsha usec)
    numsub_ms: float  # server time of the PUBSUB NUMSUB of one pass


def _commandstats(probe: redis.Redis) -> dict[str, tuple[int, int]]:
    stats: Any = probe.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(f["calls"]), int(f["usec"]))
        for name, f in stats.items()
        if name != "cmdstat_info"
    }


def _delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> tuple[int, float, float]:
    """Commands run, and ms spent in SHIM's scripts (FCALL or EVALSHA) and in PUBSUB NUMSUB,
    between two readings."""

    def usec(name: str) -> int:
        return after.get(name, (0, 0))[1] - before.get(name, (0, 0))[1]

    calls = sum(c - before.get(k, (0, 0))[0] for k, (c, _) in after.items())
    scripts = usec("fcall") + usec("evalsha")
    return calls, scripts / 1000, usec("pubsub|numsub") / 1000


class ScanBench:
    """``workers`` workers registered in one namespace, all looking alive."""

    def __init__(self, url: str, workers: int) -> None:
        self.namespace = f"scan{stamp()}"
        self.settings = Settings(redis_url=url, namespace=self.namespace)
        self.manager = RedisConnectionManager(url)
        self.registry = WorkerRegistry(self.manager, self.settings)
        self.queue = TaskQueue(self.manager, self.settings)
        self.keys = Keys(self.namespace)
        self.probe = redis.Redis.from_url(url, decode_responses=True)
        self.ids = [f"scan-w{i:05d}" for i in range(workers)]
        self._sub_client = redis.Redis.from_url(url)
        self._pubsub: Any = self._sub_client.pubsub()
        self.register_s = 0.0
        self.subscribe_s = 0.0

    def register(self, ids: Sequence[str], interval_ms: int) -> None:
        fields = json.dumps(
            {
                "name": "",
                "host": "perf",
                "pid": "0",
                "session_id": "",
                "capabilities": json.dumps(
                    {
                        "max_concurrent_tasks": 1,
                        "supported_task_types": list(WorkerCapabilities().supported_task_types),
                    }
                ),
            }
        )
        for start in range(0, len(ids), REGISTER_BATCH):
            pipe = self.registry.client.pipeline(transaction=False)
            for worker_id in ids[start : start + REGISTER_BATCH]:
                self.registry.scripts.call(
                    "register",
                    [self.keys.worker(worker_id), self.keys.workers, self.keys.worker_ids],
                    [self.keys.prefix, worker_id, interval_ms, MISSED_BEATS, fields],
                    client=pipe,
                )
            pipe.execute()

    def set_up(self) -> None:
        start = time.perf_counter()
        self.register(self.ids, 3_600_000)
        self.register_s = time.perf_counter() - start
        start = time.perf_counter()
        channels = [self.keys.alive(i) for i in self.ids]
        for i in range(0, len(channels), REGISTER_BATCH):
            self._pubsub.subscribe(*channels[i : i + REGISTER_BATCH])
        # Read the subscribe confirmations, so NUMSUB counts every channel from now on.
        seen = 0
        while seen < len(channels):
            message = self._pubsub.get_message(timeout=5)
            if message is None:
                raise RuntimeError(f"only {seen} of {len(channels)} subscriptions confirmed")
            seen += message["type"] == "subscribe"
        self.subscribe_s = time.perf_counter() - start
        live = len(self.registry.live_worker_ids())
        if live != len(self.ids):
            raise RuntimeError(f"{live} live workers registered, expected {len(self.ids)}")

    def time_pass(
        self,
        what: str,
        repeats: int,
        use_liveness: bool,
        prepare: Callable[[], None] | None,
        expect: int,
    ) -> ScanRow:
        samples: list[float] = []
        commands, script_ms, numsub_ms = 0, 0.0, 0.0
        for n in range(repeats + 1):
            if prepare is not None:
                prepare()
            measured = n == repeats  # one extra pass with INFO around it for the server figures
            before = _commandstats(self.probe) if measured else {}
            start = time.perf_counter()
            crashed = self.registry.detect_crashed_workers(use_liveness=use_liveness)
            elapsed = time.perf_counter() - start
            if len(crashed) != expect:
                raise RuntimeError(
                    f"{what}: {len(crashed)} workers declared crashed, expected {expect}"
                )
            if measured:
                commands, script_ms, numsub_ms = _delta(before, _commandstats(self.probe))
            else:
                samples.append(elapsed * 1000)
        median = statistics.median(samples)
        return ScanRow(what, median, samples, expect, commands, script_ms, numsub_ms)

    def make_overdue(self) -> None:
        """Re-register the first 100 workers with a 1 ms interval: their deadline passes at once."""
        self.register(self.ids[:OVERDUE], 1)
        time.sleep(0.01)

    def fill_active(self, tasks: int) -> None:
        """``tasks`` running tasks, held (100 each) by live workers that are never made overdue."""
        self.queue.add_many([Task(id=f"scan-t{i}", type="scanload") for i in range(tasks)])
        holders = self.ids[OVERDUE:]
        for n, start in enumerate(range(0, tasks, 100)):
            self.queue.claim(
                ["scanload"],
                worker_id=holders[n % len(holders)],
                count=min(100, tasks - start),
                lease_ms=3_600_000,
            )

    def close(self) -> None:
        self._pubsub.close()
        self._sub_client.close()
        purge(self.probe, self.keys.prefix + "*")
        self.probe.close()
        self.manager.disconnect()


def scan_cost(url: str, workers: int, repeats: int) -> tuple[ScanBench, list[ScanRow]]:
    bench = ScanBench(url, workers)
    rows: list[ScanRow] = []
    try:
        bench.set_up()
        for liveness in (False, True):
            bench.registry.detect_crashed_workers(use_liveness=liveness)  # load, warm up
        n = f"{workers:,}"
        rows.append(bench.time_pass(f"{n} live, deadline only", repeats, False, None, 0))
        rows.append(
            bench.time_pass(f"{n} live, deadline + liveness NUMSUB", repeats, True, None, 0)
        )
        rows.append(
            bench.time_pass(
                f"{OVERDUE} of {n} overdue, deadline only",
                repeats,
                False,
                bench.make_overdue,
                OVERDUE,
            )
        )
        rows.append(
            bench.time_pass(
                f"{OVERDUE} of {n} overdue, deadline + liveness",
                repeats,
                True,
                bench.make_overdue,
                OVERDUE,
            )
        )
        bench.fill_active(workers)
        rows.append(
            bench.time_pass(
                f"{OVERDUE} of {n} overdue, {workers:,} running tasks, deadline only",
                max(1, repeats // 2),
                False,
                bench.make_overdue,
                OVERDUE,
            )
        )
    finally:
        bench.close()
    return bench, rows


# ---------------------------------------------------------------------------------- report
def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"median {statistics.median(values):.2f} s   p90 {percentile(values, 90):.2f} s   "
        f"max {max(values):.2f} s   min {min(values):.2f} s"
    )


def _gap(pairs: list[tuple[float | None, float | None]]) -> str:
    gaps = [(b - a) * 1000 for a, b in pairs if a is not None and b is not None]
    if not gaps:
        return "no samples"
    return f"median {statistics.median(gaps):.1f} ms   max {max(gaps):.1f} ms"


def report_kills(samples: list[KillSample]) -> None:
    restarts = [s.restart_s for s in samples if s.restart_s is not None]
    detects = [s.detect_s for s in samples if s.detect_s is not None]
    reasons = ", ".join(sorted({s.reason for s in samples}))
    beat = f"{DEFAULT_HEARTBEAT_INTERVAL:g}"
    print(f"\n== SIGKILL -> task running on another worker (defaults: heartbeat {beat} s) ==")
    print(
        f"samples {len(samples)}, lost {len(samples) - len(restarts)}, "
        f"t1 taken by the polling fallback {sum(s.polled for s in samples)}"
    )
    print(f"restart (t1 - t0):             {_summary(restarts)}")
    print(f"crash declared (event - t0):   {_summary(detects)}")
    print(
        f"declared crashed -> claimed again: {_gap([(s.detect_s, s.restart_s) for s in samples])}"
    )
    print(f"crash reasons: {reasons}")


def report_hangs(samples: list[HangSample]) -> None:
    print("\n== SIGSTOP (hung worker) -> task running on another worker ==")
    print(
        f"{'heartbeat':>9}  {'restart s':>9}  {'declared s':>10}  {'reason':<22}  "
        f"{'late result on SIGCONT':<22}  task kept by new holder"
    )
    for s in samples:
        print(
            f"{s.heartbeat:>8g}s  {_s(s.restart_s):>9}  {_s(s.detect_s):>10}  {s.reason:<22}  "
            f"{s.late_result:<22}  {'yes' if s.still_on_new_holder else 'NO'}"
        )
    for beat in sorted({s.heartbeat for s in samples}):
        values = [s.restart_s for s in samples if s.heartbeat == beat and s.restart_s is not None]
        print(f"heartbeat {beat:g} s: {_summary(values)}")
    print(
        f"declared crashed -> claimed again: {_gap([(s.detect_s, s.restart_s) for s in samples])}"
    )
    line = next((s.late_line for s in samples if s.late_line), "")
    if line:
        print(f"resumed worker's log: {line}")


def report_beats(rows: list[BeatRow]) -> None:
    print(
        f"\n== record_heartbeat of one worker (round trips and commands: mean of {BEATS} beats; "
        f"µs: mean of {TIMED_BEATS}) =="
    )
    print(f"{'leases':>6}  {'round trips':>11}  {'server cmds':>11}  {'µs/beat':>8}  top commands")
    for r in rows:
        print(
            f"{r.leases:>6}  {r.round_trips:>11.3g}  {r.commands:>11.4g}  "
            f"{r.us_per_beat:>8.1f}  {r.top}"
        )


def report_scan(bench: ScanBench, rows: list[ScanRow]) -> None:
    n = f"{len(bench.ids):,}"
    print(
        f"\n== detect_crashed_workers over {n} registered workers (registered in "
        f"{bench.register_s:.2f} s; {n} liveness subscriptions in {bench.subscribe_s:.2f} s) =="
    )
    width = max(len(r.what) for r in rows)
    print(
        f"{'pass':<{width}}  {'median ms':>9}  {'samples ms':<30}  {'crashed':>7}  "
        f"{'server cmds':>11}  {'script ms':>9}  {'NUMSUB ms':>9}"
    )
    for r in rows:
        samples = " ".join(f"{v:.1f}" for v in r.samples_ms)
        print(
            f"{r.what:<{width}}  {r.median_ms:>9.1f}  {samples:<30}  {r.crashed:>7}  "
            f"{r.commands:>11,}  {r.script_ms:>9.1f}  {r.numsub_ms:>9.1f}"
        )


# ------------------------------------------------------------------------------------ main
def wait_past_restart_grace(client: Any) -> None:
    """Liveness evidence is ignored while the server is younger than RESTART_GRACE_S (see
    registry.py); a freshly started private server would hide it from the first samples."""
    uptime = int(client.info("server")["uptime_in_seconds"])
    if uptime <= RESTART_GRACE_S:
        wait = RESTART_GRACE_S + 1 - uptime
        print(f"\n(redis-server is {uptime} s old: waiting {wait} s for its restart grace)")
        time.sleep(wait)


def run_fleet_parts(
    url: str, args: argparse.Namespace, parts: set[str], log_dir: Path
) -> tuple[list[KillSample], list[HangSample]]:
    tag = stamp()
    kills: list[KillSample] = []
    hangs: list[HangSample] = []
    hang_1s = 2 if args.quick else 5
    hang_10s = 0 if args.quick else 2
    rng = random.Random(args.seed)
    manager = RedisConnectionManager(url)
    wait_past_restart_grace(manager.get_client())
    try:
        if "kill" in parts or ("hang" in parts and hang_10s):
            settings = Settings(redis_url=url, namespace=f"crash{tag}")
            fleet = Fleet(
                settings, mode="process", heartbeat=DEFAULT_HEARTBEAT_INTERVAL, log_dir=log_dir
            )
            watcher = Watcher(manager, settings)
            try:
                fleet.start(FLEET_SIZE)
                if "kill" in parts:
                    print(f"\nSIGKILL samples, fleet of {FLEET_SIZE}, heartbeat 10 s:", flush=True)
                    kills = kill_samples(fleet, watcher, args.kills, tag, rng)
                if "hang" in parts and hang_10s:
                    print("\nSIGSTOP samples, heartbeat 10 s:", flush=True)
                    hangs += hang_samples(fleet, watcher, hang_10s, f"{tag}h10", rng)
            finally:
                watcher.close()
                fleet.close()
                purge(manager.get_client(), Keys(settings.namespace).prefix + "*")
        if "hang" in parts:
            settings = Settings(redis_url=url, namespace=f"hang{tag}")
            fleet = Fleet(settings, mode="process", heartbeat=1.0, log_dir=log_dir)
            watcher = Watcher(manager, settings)
            try:
                fleet.start(FLEET_SIZE)
                print("\nSIGSTOP samples, heartbeat 1 s:", flush=True)
                hangs = hang_samples(fleet, watcher, hang_1s, f"{tag}h1", rng) + hangs
            finally:
                watcher.close()
                fleet.close()
                purge(manager.get_client(), Keys(settings.namespace).prefix + "*")
    finally:
        manager.disconnect()
    return kills, hangs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument(
        "--kills", type=int, default=None, help="SIGKILL samples (default 20, --quick 5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer samples; skip the 10 s-heartbeat hang samples (about 30 s each)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the random pause before each kill / freeze"
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--workers", type=int, default=SCAN_WORKERS, help="registered workers for the scan part"
    )
    args = parser.parse_args(argv)
    args.kills = args.kills if args.kills is not None else (5 if args.quick else 20)
    if args.workers <= OVERDUE:
        parser.error(f"--workers must be more than {OVERDUE}")
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    begin = time.perf_counter()
    with (
        redis_url(args.redis_url, args.redis_server) as url,
        tempfile.TemporaryDirectory(prefix="shim-perf-fleet-") as logs,
    ):
        print(describe(url))
        beats: list[BeatRow] = []
        scan: tuple[ScanBench, list[ScanRow]] | None = None
        if "beat" in parts:
            beats = heartbeat_cost(url)
        if "scan" in parts:
            scan = scan_cost(url, args.workers, 3 if args.quick else 5)
        kills: list[KillSample] = []
        hangs: list[HangSample] = []
        if parts & {"kill", "hang"}:
            kills, hangs = run_fleet_parts(url, args, parts, Path(logs))
        print("\n================================ results ================================")
        print(describe(url))
        if kills:
            report_kills(kills)
        if hangs:
            report_hangs(hangs)
        if beats:
            report_beats(beats)
        if scan is not None:
            report_scan(*scan)
    print(f"\n({time.perf_counter() - begin:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
