"""Throughput of a pipelined bulk add and a one-worker drain, and enqueue-to-claim latency.

1. ``add_many`` of N tasks (default 10,000): wall time and tasks/s. The Task objects are built
   before the clock starts (their build time is printed separately).
2. Drain by one worker loop: ``claim(count=B)`` then ``complete`` of each claimed task, until the
   queue is empty; wall time and tasks/s. Repeated for every batch size B in ``--batch``, each on
   a freshly added set of N tasks.
3. Claim latency: a claimer thread sits in ``claim(..., block=5)`` (Lua claim, then BZPOPMIN on
   the wake marker); the main thread calls ``add`` of one task; latency runs from just before
   ``add`` is called to just after ``claim`` returns the task in the other thread. Repeated for
   ``--samples`` tasks (default 1,000), one at a time, each once the claimer is blocked again.

Run: ``PYTHONPATH=. python perf/drain.py`` (about 10 s here).
"""

from __future__ import annotations

import argparse
import queue as stdqueue
import statistics
import sys
import threading
import time
from collections.abc import Sequence

import attrs
from _server import add_server_args, describe, purge, redis_url

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.keys import Keys
from shim_core.models import Task
from shim_core.queue import TaskQueue

TYPE = "drain"
#: Pause after the claimer says it is about to block, so it is inside BZPOPMIN when the task comes.
SETTLE_S = 0.002


#: The --batch value naming the chained drain (complete_and_claim), stored as batch 0.
CHAIN = 0


@attrs.frozen
class DrainResult:
    tasks: int
    batch: int
    build_s: float
    add_s: float
    drain_s: float
    completed: int


@attrs.frozen
class Latency:
    samples: list[float]  # enqueue -> claimed, seconds
    add_calls: list[float]  # duration of the add() call alone, seconds


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _queue(url: str, namespace: str) -> tuple[RedisConnectionManager, TaskQueue]:
    manager = RedisConnectionManager(url)
    return manager, TaskQueue(manager, Settings(redis_url=url, namespace=namespace))


def add_and_drain(url: str, namespace: str, n: int, batch: int) -> DrainResult:
    manager, queue = _queue(url, namespace)
    try:
        queue.add_many([Task(id="warm", type="warm-up")])  # load scripts, open the connection
        start = time.perf_counter()
        tasks = [Task(type=TYPE, title="noop") for _ in range(n)]
        built = time.perf_counter()
        queue.add_many(tasks)
        added = time.perf_counter()
        types = [TYPE]
        if batch == CHAIN:  # a busy worker: each completion claims the next task, 1 round trip
            claims = queue.claim(types, count=1)
            while claims:
                _, claims = queue.complete_and_claim(
                    claims[0].task.id, claims[0].token, None, types
                )
        while batch != CHAIN:
            claims = queue.claim(types, count=batch)
            if not claims:
                break
            for claim in claims:
                queue.complete(claim.task.id, claim.token)
        drained = time.perf_counter()
        completed = queue.stats().complete
        return DrainResult(n, batch, built - start, added - built, drained - added, completed)
    finally:
        purge(queue.client, Keys(namespace).prefix + "*")
        manager.disconnect()


def claim_latency(url: str, namespace: str, samples: int) -> Latency:
    worker_manager, worker = _queue(url, namespace)
    producer_manager, producer = _queue(url, namespace)
    ready = threading.Event()
    claimed: stdqueue.Queue[tuple[str, float] | BaseException] = stdqueue.Queue()
    stop = threading.Event()

    def claimer() -> None:
        try:
            while not stop.is_set():
                ready.set()
                claims = worker.claim([TYPE], count=1, block=5.0)
                at = time.perf_counter()
                if not claims:
                    continue
                claimed.put((claims[0].task.id, at))
                worker.complete(claims[0].task.id, claims[0].token)
        except BaseException as exc:  # surfaced in the main thread
            claimed.put(exc)

    # warm both clients (scripts loaded, connections open) before the first sample
    producer.add(Task(id="warm", type=TYPE))
    warm = worker.claim([TYPE], count=1)
    worker.complete(warm[0].task.id, warm[0].token)

    thread = threading.Thread(target=claimer, name="claimer", daemon=True)
    thread.start()
    lat: list[float] = []
    add_calls: list[float] = []
    try:
        for i in range(samples):
            if not ready.wait(10):
                raise RuntimeError("the claimer thread stopped answering")
            ready.clear()
            time.sleep(SETTLE_S)
            task = Task(id=f"lat-{i}", type=TYPE, title="noop")
            t0 = time.perf_counter()
            producer.add(task)
            add_calls.append(time.perf_counter() - t0)
            got = claimed.get(timeout=10)
            if isinstance(got, BaseException):
                raise got
            task_id, at = got
            if task_id != task.id:
                raise RuntimeError(f"claimed {task_id!r}, expected {task.id!r}")
            lat.append(at - t0)
    finally:
        stop.set()
        producer.add(Task(id="stop", type=TYPE))  # wake the claimer so it sees stop
        thread.join(10)
        purge(producer.client, Keys(namespace).prefix + "*")
        worker_manager.disconnect()
        producer_manager.disconnect()
    return Latency(lat, add_calls)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per add/drain run")
    parser.add_argument(
        "--batch",
        default="1,100,chain",
        help="comma-separated claim batch sizes, one drain each; 'chain' drains with "
        "complete_and_claim, as a busy worker does (default: 1,100,chain)",
    )
    parser.add_argument("--samples", type=int, default=1000, help="claim latency samples")
    args = parser.parse_args(argv)
    batches = [
        CHAIN if b.strip() == "chain" else int(b) for b in args.batch.split(",") if b.strip()
    ]
    stamp = int(time.time() * 1000) % 10**8

    with redis_url(args.redis_url, args.redis_server) as url:
        print(describe(url))
        print(f"\n== add_many + one-worker drain, {args.tasks:,} no-op tasks ==")
        print(
            f"{'claim count':>11}  {'build':>8}  {'add_many':>9}  {'add tasks/s':>11}  "
            f"{'drain':>8}  {'drain tasks/s':>13}  completed"
        )
        for batch in batches:
            r = add_and_drain(url, f"drain{stamp}b{batch}", args.tasks, batch)
            label = "chain" if batch == CHAIN else str(batch)
            print(
                f"{label:>11}  {r.build_s:>7.3f}s  {r.add_s:>8.3f}s  "
                f"{r.tasks / r.add_s:>11,.0f}  {r.drain_s:>7.3f}s  "
                f"{r.tasks / r.drain_s:>13,.0f}  {r.completed:,}"
            )

        print(
            f"\n== claim latency (enqueue -> claimed by a blocked claimer), "
            f"{args.samples:,} single tasks =="
        )
        lat = claim_latency(url, f"lat{stamp}", args.samples)
        s = lat.samples
        print(
            f"p50 {_ms(percentile(s, 50))}   p90 {_ms(percentile(s, 90))}   "
            f"p99 {_ms(percentile(s, 99))}   max {_ms(max(s))}   "
            f"mean {_ms(statistics.fmean(s))}"
        )
        print(
            f"of which the add() call alone: p50 {_ms(percentile(lat.add_calls, 50))}   "
            f"p99 {_ms(percentile(lat.add_calls, 99))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
