"""pyperf micro-benchmarks of SHIM's hot paths on a real redis-server.

Each benchmark times only the queue calls: task objects, the tasks to claim and the lease to renew
are prepared before the clock starts, and every timed call gets a fresh namespace that is deleted
after the clock stops, so no run sees another's data. Where each iteration needs a fresh state
(``reap_1k``, ``reaper_1k``, ``dag_release_1k``), each iteration gets its own namespace and only
the call itself is on the clock. The exception is the crash-scan pair, see ``_ScanFleet``.

* ``enqueue``              one ``TaskQueue.add`` (one task)
* ``enqueue_batch_1000``   one ``add_many`` of 1,000 tasks (divide by 1,000 for per task)
* ``enqueue_signed``       ``enqueue`` with a signing secret set (``SHIM_SECRET``): what signing
                           each task costs
* ``enqueue_signed_batch_1000``  ``enqueue_batch_1000`` with the secret set
* ``claim_complete``       ``claim(count=1)`` then ``complete`` of one already enqueued task
* ``progress``             one ``progress`` publish on a running task
* ``extend_1``             one heartbeat ``extend`` renewing 1 lease
* ``extend_10``            one heartbeat ``extend`` renewing 10 leases
* ``heartbeat_1``          one ``WorkerRegistry.record_heartbeat`` of a worker holding 1 lease
* ``heartbeat_10``         the same with 10 leases (this, not ``extend``, is what a worker's
                           heartbeat thread sends)
* ``progress_delivery``    ``progress`` until the ``task:progress`` event reaches a ``MessageBus``
                           handler (the bus's listener thread), per event
* ``crash_scan_10k``       one ``detect_crashed_workers`` pass over 10,000 live workers (all
                           liveness channels subscribed), none crashed (these two share one
                           10,000-worker namespace per pyperf process, see ``_ScanFleet``)
* ``crash_scan_10k_one``   the same pass when one of the 10,000 missed its heartbeats
* ``reap_1k``              one ``reap_stalled(limit=1000)`` returning 1,000 expired leases to
                           pending
* ``reaper_1k``            a worker's reaper (``WorkerCrashRecovery.detect_and_recover`` with the
                           Redis checkpoint store, default limits) run pass after pass, back to
                           back, until 1,000 expired leases are all back to pending
* ``dag_release_1k``       ``complete`` of one task that 1,000 waiting dependents wait on

Run: ``PYTHONPATH=. python perf/bench_queue.py --fast`` (pyperf options apply, e.g. ``-o out.json``
or ``--rigorous``; ``--only NAME[,NAME]`` picks benchmarks).
The manager process starts one private redis-server (unless ``--redis-url``) and hands its URL to
every pyperf worker process.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyperf
import redis
from _server import RedisServer, purge

from shim_core.bus import Channels, MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.keys import Keys
from shim_core.models import ProgressEvent, Task, WorkerRegistration
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.worker.recovery import WorkerCrashRecovery

TYPE = "bench"
BATCH = 1000


class Options:
    """Settings every pyperf process reads (``main`` sets them from the command line)."""

    #: Registered workers of the crash-scan benchmarks (``--scan-workers``; smaller in CI only).
    scan_workers = 10_000


#: Expired leases of the reaper benchmarks, and waiting dependents of ``dag_release_1k``.
FAN = 1000
#: Longest wait for one event or one setup step before a benchmark gives up.
WAIT_S = 10.0
_names = itertools.count()


@functools.cache
def _manager(url: str) -> RedisConnectionManager:
    """One connection manager (and so one client) per worker process."""
    return RedisConnectionManager(url)


#: The signing key of the ``*_signed*`` benchmarks.
SECRET = "bench-" + "k" * 26


@contextlib.contextmanager
def fresh_queue(url: str, secret: str = "") -> Iterator[TaskQueue]:
    """A TaskQueue on a namespace of its own (signing with ``secret``), deleted afterwards."""
    namespace = f"pf{os.getpid()}-{next(_names)}"
    settings = Settings(redis_url=url, namespace=namespace, secret=secret)
    queue = TaskQueue(_manager(url), settings)
    try:
        yield queue
    finally:
        purge(queue.client, Keys(namespace).prefix + "*")


def make_tasks(n: int) -> list[Task]:
    return [Task(type=TYPE, title="noop") for _ in range(n)]


def bench_enqueue(loops: int, url: str, secret: str = "") -> float:
    tasks = make_tasks(loops)
    with fresh_queue(url, secret) as queue:
        start = time.perf_counter()
        for task in tasks:
            queue.add(task)
        return time.perf_counter() - start


def bench_enqueue_batch(loops: int, url: str, secret: str = "") -> float:
    batches = [make_tasks(BATCH) for _ in range(loops)]
    with fresh_queue(url, secret) as queue:
        start = time.perf_counter()
        for batch in batches:
            queue.add_many(batch)
        return time.perf_counter() - start


def bench_claim_complete(loops: int, url: str) -> float:
    with fresh_queue(url) as queue:
        queue.add_many(make_tasks(loops))
        types = [TYPE]
        start = time.perf_counter()
        for _ in range(loops):
            claim = queue.claim(types, count=1)[0]
            queue.complete(claim.task.id, claim.token)
        return time.perf_counter() - start


def bench_progress(loops: int, url: str) -> float:
    with fresh_queue(url) as queue:
        queue.add(Task(type=TYPE, title="noop"))
        claim = queue.claim([TYPE], count=1)[0]
        task_id, token = claim.task.id, claim.token
        start = time.perf_counter()
        for i in range(loops):
            queue.progress(task_id, token, (i % 100) / 100, "working")
        return time.perf_counter() - start


def _bench_extend(loops: int, url: str, leases: int) -> float:
    with fresh_queue(url) as queue:
        queue.add_many(make_tasks(leases))
        held = [(c.task.id, c.token) for c in queue.claim([TYPE], count=leases)]
        start = time.perf_counter()
        for _ in range(loops):
            queue.extend(held)
        return time.perf_counter() - start


def bench_extend_1(loops: int, url: str) -> float:
    return _bench_extend(loops, url, 1)


def bench_extend_10(loops: int, url: str) -> float:
    return _bench_extend(loops, url, 10)


def _registry(queue: TaskQueue) -> WorkerRegistry:
    return WorkerRegistry(_manager(queue.settings.redis_url), queue.settings)


def _bench_heartbeat(loops: int, url: str, leases: int) -> float:
    """A registered worker's heartbeat renewing ``leases`` leases it holds (nothing is lost)."""
    with fresh_queue(url) as queue:
        registry = _registry(queue)
        worker = "bench-worker"
        registry.register_worker(WorkerRegistration(id=worker), heartbeat_interval=60.0)
        queue.add_many(make_tasks(leases))
        held = [(c.task.id, c.token) for c in queue.claim([TYPE], worker_id=worker, count=leases)]
        lost: list[str] = []
        start = time.perf_counter()
        for _ in range(loops):
            lost = registry.record_heartbeat(worker, held)
        elapsed = time.perf_counter() - start
        if lost or len(held) != leases:
            raise RuntimeError(f"heartbeat: {len(held)} leases held, lost {lost}")
        return elapsed


def bench_heartbeat_1(loops: int, url: str) -> float:
    return _bench_heartbeat(loops, url, 1)


def bench_heartbeat_10(loops: int, url: str) -> float:
    return _bench_heartbeat(loops, url, 10)


class _Arrivals:
    """A bus handler noting when the progress event with an expected message arrives."""

    def __init__(self) -> None:
        self.expected = ""
        self.at = 0.0
        self.arrived = threading.Event()

    def __call__(self, event: ProgressEvent, _channel: str) -> None:
        message = event.progress.message if event.progress else None
        if message == self.expected:
            self.at = time.perf_counter()
            self.arrived.set()

    def expect(self, message: str) -> None:
        self.expected = message
        self.arrived.clear()


def bench_progress_delivery(loops: int, url: str) -> float:
    """From just before ``progress()`` to the handler call on the bus's listener thread."""
    with fresh_queue(url) as queue, MessageBus(_manager(url), queue.settings) as bus:
        handler = _Arrivals()
        bus.subscribe(Channels.TASK_PROGRESS, handler)
        queue.add(Task(type=TYPE, title="noop"))
        claim = queue.claim([TYPE], count=1)[0]
        task_id, token = claim.task.id, claim.token
        # The subscription is live once a warm-up event arrives (SUBSCRIBE is asynchronous).
        deadline = time.monotonic() + WAIT_S
        warm = itertools.count()
        while True:
            handler.expect(f"warm-up {next(warm)}")
            queue.progress(task_id, token, 0.0, handler.expected)
            if handler.arrived.wait(0.05):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("progress_delivery: the subscription never became live")
        total = 0.0
        for i in range(loops):
            handler.expect(f"step {i}")
            start = time.perf_counter()
            queue.progress(task_id, token, (i % 100) / 100, handler.expected)
            if not handler.arrived.wait(WAIT_S):
                raise RuntimeError(f"progress_delivery: event {i} did not arrive")
            total += handler.at - start
        return total


class _ScanFleet:
    """``Options.scan_workers`` (10,000) registered workers (60 s heartbeat) in a namespace of
    their own, each liveness channel subscribed (one helper connection holds them all), as if
    every worker process were up.

    Registering 10,000 workers through the public ``register_worker`` takes about 5 s (one round
    trip each), so each pyperf process builds this namespace once, at its first timed call, and
    deletes it when the process exits. A pass that declares nobody crashed leaves the namespace
    as it found it, and ``crash_scan_10k_one`` registers its victim again after each pass, so
    every timed pass sees the same 10,000 live workers.
    """

    def __init__(self, url: str) -> None:
        self._names = fresh_queue(url)
        self.queue = self._names.__enter__()
        self.registry = _registry(self.queue)
        self.ids = [f"scan-w{i:05d}" for i in range(Options.scan_workers)]
        self._client = redis.Redis.from_url(url)
        self._pubsub: Any = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._closed = False
        atexit.register(self.close)
        for worker_id in self.ids:
            self.register(worker_id, 60.0)
        channels = [self.queue.keys.alive(i) for i in self.ids]
        for i in range(0, len(channels), 1000):
            self._pubsub.subscribe(*channels[i : i + 1000])
        confirmed = 0
        while confirmed < len(channels):  # NUMSUB counts a channel once its SUBSCRIBE is done
            message = self._pubsub.get_message(timeout=WAIT_S)
            if message is None:
                raise RuntimeError(f"only {confirmed} of {len(channels)} subscriptions confirmed")
            confirmed += message["type"] == "subscribe"
        self.check()

    def register(self, worker_id: str, interval: float) -> None:
        self.registry.register_worker(WorkerRegistration(id=worker_id), heartbeat_interval=interval)

    def check(self) -> None:
        live = len(self.registry.live_worker_ids())
        if live != Options.scan_workers:
            raise RuntimeError(f"{live} live workers, expected {Options.scan_workers}")

    def close(self) -> None:
        """Delete the namespace (once: main() closes it before it stops its own server, and the
        exit hook would then wait for a server that is gone)."""
        if self._closed:
            return
        self._closed = True
        self._pubsub.close()
        self._client.close()
        self._names.__exit__(None, None, None)


@functools.cache
def _scan_fleet(url: str) -> _ScanFleet:
    return _ScanFleet(url)


def bench_crash_scan_10k(loops: int, url: str) -> float:
    fleet = _scan_fleet(url)
    fleet.registry.detect_crashed_workers()  # the script is loaded
    crashed = []
    start = time.perf_counter()
    for _ in range(loops):
        crashed = fleet.registry.detect_crashed_workers()
    elapsed = time.perf_counter() - start
    if crashed:
        raise RuntimeError(f"crash_scan_10k: {len(crashed)} workers declared crashed")
    return elapsed


def bench_crash_scan_10k_one(loops: int, url: str) -> float:
    """Before each timed pass, one worker registers again with a 1 ms heartbeat interval, so
    its deadline (3 missed beats) has passed when the scan runs; afterwards it registers again
    with 60 s, so the next pass sees 10,000 live workers again."""
    fleet = _scan_fleet(url)
    fleet.registry.detect_crashed_workers()
    total = 0.0
    for i in range(loops):
        victim = fleet.ids[i % len(fleet.ids)]
        fleet.register(victim, 0.001)
        time.sleep(0.01)
        start = time.perf_counter()
        crashed = fleet.registry.detect_crashed_workers()
        total += time.perf_counter() - start
        if [c.worker_id for c in crashed] != [victim]:
            raise RuntimeError(f"crash_scan_10k_one: crashed {crashed}, expected {victim}")
        fleet.register(victim, 60.0)
    fleet.check()
    return total


@contextlib.contextmanager
def _expired_leases(url: str) -> Iterator[TaskQueue]:
    """A fresh namespace with ``FAN`` running tasks whose 1 ms leases have expired."""
    with fresh_queue(url) as queue:
        queue.add_many(make_tasks(FAN))
        if len(queue.claim([TYPE], count=FAN, lease_ms=1)) != FAN:
            raise RuntimeError("could not claim the tasks to expire")
        time.sleep(0.01)
        yield queue


def bench_reap_1k(loops: int, url: str) -> float:
    total = 0.0
    for _ in range(loops):
        with _expired_leases(url) as queue:
            start = time.perf_counter()
            reaped = queue.reap_stalled(limit=FAN)
            total += time.perf_counter() - start
            if len(reaped) != FAN:
                raise RuntimeError(f"reap_1k: reaped {len(reaped)} of {FAN}")
    return total


@functools.cache
def _plugins() -> Plugins:
    return Plugins()


def bench_reaper_1k(loops: int, url: str) -> float:
    """The reaper as a worker builds it (``shim_core/worker/runtime.py``), without the pauses
    between its passes: how much work 1,000 expired leases cost the fleet's reaper in all."""
    total = 0.0
    for _ in range(loops):
        with _expired_leases(url) as queue:
            manager = _manager(url)
            backend = _plugins().backends["redis"].create(manager, queue.settings)
            recovery = WorkerCrashRecovery(_registry(queue), queue, CheckpointStore(backend, queue))
            reassigned = 0
            start = time.perf_counter()
            while reassigned < FAN:
                report = recovery.detect_and_recover()
                if report.empty:
                    break
                reassigned += len(report.reassigned_tasks)
            total += time.perf_counter() - start
            if reassigned != FAN:
                raise RuntimeError(f"reaper_1k: reassigned {reassigned} of {FAN}")
    return total


def bench_dag_release_1k(loops: int, url: str) -> float:
    total = 0.0
    for _ in range(loops):
        with fresh_queue(url) as queue:
            parent = Task(type=TYPE, title="parent")
            children = [
                Task(type=TYPE, title="child", dependencies=(parent.id,)) for _ in range(FAN)
            ]
            queue.add_many([parent, *children])
            claim = queue.claim([TYPE], count=1)[0]
            if claim.task.id != parent.id:
                raise RuntimeError("dag_release_1k: claimed a dependent before its parent")
            start = time.perf_counter()
            released = queue.complete(claim.task.id, claim.token)
            total += time.perf_counter() - start
            if released != FAN:
                raise RuntimeError(f"dag_release_1k: released {released} of {FAN}")
    return total


BENCHMARKS: dict[str, Callable[[int, str], float]] = {
    "enqueue": bench_enqueue,
    "enqueue_batch_1000": bench_enqueue_batch,
    "enqueue_signed": functools.partial(bench_enqueue, secret=SECRET),
    "enqueue_signed_batch_1000": functools.partial(bench_enqueue_batch, secret=SECRET),
    "claim_complete": bench_claim_complete,
    "progress": bench_progress,
    "extend_1": bench_extend_1,
    "extend_10": bench_extend_10,
    "heartbeat_1": bench_heartbeat_1,
    "heartbeat_10": bench_heartbeat_10,
    "progress_delivery": bench_progress_delivery,
    "crash_scan_10k": bench_crash_scan_10k,
    "crash_scan_10k_one": bench_crash_scan_10k_one,
    "reap_1k": bench_reap_1k,
    "reaper_1k": bench_reaper_1k,
    "dag_release_1k": bench_dag_release_1k,
}


def _forward_args(cmd: list[str], args: argparse.Namespace) -> None:
    """Pass the shared server's URL and the selection on to each pyperf worker."""
    cmd.extend(["--redis-url", args.redis_url])
    if args.only:
        cmd.extend(["--only", args.only])
    cmd.extend(["--scan-workers", str(args.scan_workers)])


def main() -> None:
    runner = pyperf.Runner(processes=8, values=3, add_cmdline_args=_forward_args)
    runner.metadata["description"] = "SHIM TaskQueue hot paths on a real redis-server"
    parser: Any = runner.argparser
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this running Redis instead of starting a private redis-server",
    )
    parser.add_argument(
        "--redis-server",
        default="redis-server",
        help="redis-server binary to start (default: %(default)s)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--scan-workers",
        type=int,
        default=Options.scan_workers,
        help="registered workers of the crash_scan_10k benchmarks (default: %(default)s)",
    )
    args = runner.parse_args()
    Options.scan_workers = args.scan_workers
    selected = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    server: RedisServer | None = None
    if not args.redis_url:
        if args.worker:
            parser.error("a pyperf worker needs --redis-url")
        server = RedisServer(args.redis_server).start()
        args.redis_url = server.url
    try:
        for name in selected:
            runner.bench_time_func(name, BENCHMARKS[name], args.redis_url)
    finally:
        if server is not None:
            if _scan_fleet.cache_info().currsize:  # its namespace goes while the server is up
                _scan_fleet(args.redis_url).close()
            server.stop()


if __name__ == "__main__":
    main()
