"""pyperf micro-benchmarks of SHIM's hot paths on a real redis-server.

Each benchmark times only the queue calls: task objects, the tasks to claim and the lease to renew
are prepared before the clock starts, and every timed call gets a fresh namespace that is deleted
after the clock stops, so no run sees another's data.

* ``enqueue``              one ``TaskQueue.add`` (one task)
* ``enqueue_batch_1000``   one ``add_many`` of 1,000 tasks (divide by 1,000 for per task)
* ``claim_complete``       ``claim(count=1)`` then ``complete`` of one already enqueued task
* ``progress``             one ``progress`` publish on a running task
* ``extend_1``             one heartbeat ``extend`` renewing 1 lease
* ``extend_10``            one heartbeat ``extend`` renewing 10 leases

Run: ``PYTHONPATH=. python perf/bench_queue.py --fast`` (pyperf options apply, e.g. ``-o out.json``
or ``--rigorous``; ``--only NAME[,NAME]`` picks benchmarks).
The manager process starts one private redis-server (unless ``--redis-url``) and hands its URL to
every pyperf worker process.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyperf
from _server import RedisServer, purge

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.keys import Keys
from shim_core.models import Task
from shim_core.queue import TaskQueue

TYPE = "bench"
BATCH = 1000
_names = itertools.count()


@functools.cache
def _manager(url: str) -> RedisConnectionManager:
    """One connection manager (and so one client) per worker process."""
    return RedisConnectionManager(url)


@contextlib.contextmanager
def fresh_queue(url: str) -> Iterator[TaskQueue]:
    """A TaskQueue on a namespace of its own, deleted afterwards."""
    namespace = f"pf{os.getpid()}-{next(_names)}"
    queue = TaskQueue(_manager(url), Settings(redis_url=url, namespace=namespace))
    try:
        yield queue
    finally:
        purge(queue.client, Keys(namespace).prefix + "*")


def make_tasks(n: int) -> list[Task]:
    return [Task(type=TYPE, title="noop") for _ in range(n)]


def bench_enqueue(loops: int, url: str) -> float:
    tasks = make_tasks(loops)
    with fresh_queue(url) as queue:
        start = time.perf_counter()
        for task in tasks:
            queue.add(task)
        return time.perf_counter() - start


def bench_enqueue_batch(loops: int, url: str) -> float:
    batches = [make_tasks(BATCH) for _ in range(loops)]
    with fresh_queue(url) as queue:
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


BENCHMARKS: dict[str, Callable[[int, str], float]] = {
    "enqueue": bench_enqueue,
    "enqueue_batch_1000": bench_enqueue_batch,
    "claim_complete": bench_claim_complete,
    "progress": bench_progress,
    "extend_1": bench_extend_1,
    "extend_10": bench_extend_10,
}


def _forward_args(cmd: list[str], args: argparse.Namespace) -> None:
    """Pass the shared server's URL and the selection on to each pyperf worker."""
    cmd.extend(["--redis-url", args.redis_url])
    if args.only:
        cmd.extend(["--only", args.only])


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
    args = runner.parse_args()
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
            server.stop()


if __name__ == "__main__":
    main()
