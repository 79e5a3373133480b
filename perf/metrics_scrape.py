"""How long one scrape of a namespace's metrics takes, and that it does not grow with the tasks.

The namespace gets ``--tasks`` tasks (default 10,000) over ``--types`` types (default 5), half of
them completed and one in ten failed, ``--workers`` registered workers (default 50) and
``--runs`` runs (default 100); then :func:`shim_core.metrics.render` (the text a Prometheus
scrape gets) is timed ``--scrapes`` times (default 50) and the median, 90th percentile and the
size of the text are printed. Redis is a private redis-server unless ``--redis-url`` is given.

Run: ``PYTHONPATH=. python perf/metrics_scrape.py [--tasks 100000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _server import add_server_args, describe, redis_url

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue, TaskResult
from shim_core.metrics import render
from shim_core.models import WorkerRegistration
from shim_core.registry import WorkerRegistry


def populate(queue: TaskQueue, registry: WorkerRegistry, args: argparse.Namespace) -> None:
    for run in range(args.runs):
        queue.add_run(f"r{run}", {"name": f"run {run}"}, [Task(id=f"r{run}-t", run_id=f"r{run}")])
    tasks = [Task(id=f"t{i}", type=f"type{i % args.types}") for i in range(args.tasks)]
    for i in range(0, len(tasks), 5_000):
        queue.add_many(tasks[i : i + 5_000])
    types = [f"type{n}" for n in range(args.types)]
    done = 0
    while done < args.tasks // 2:
        claims = queue.claim(types, worker_id="", count=500)
        for claim in claims:
            if done % 10 == 0:
                queue.fail(claim.task.id, claim.token, "failed on purpose", permanent=True)
            else:
                queue.complete(claim.task.id, claim.token, TaskResult(success=True))
            done += 1
    for n in range(args.workers):
        registry.register_worker(WorkerRegistration(id=f"w{n}"), heartbeat_interval=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=5)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=50)
    add_server_args(parser)
    args = parser.parse_args()
    with redis_url(args.redis_url, args.redis_server) as url:
        settings = Settings.load(redis_url=url, namespace=f"scrape{os.getpid()}")
        connection = RedisConnectionManager(url)
        connection.connect()
        populate(TaskQueue(connection, settings), WorkerRegistry(connection, settings), args)
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            text = render(connection, settings)
            times.append(time.perf_counter() - started)
        times.sort()
        p90 = times[int(len(times) * 0.9) - 1] if len(times) >= 10 else times[-1]
        print(
            f"{describe(url)}\n{args.tasks} tasks, {args.types} types, {args.workers} workers, "
            f"{args.runs} runs: one scrape {statistics.median(times) * 1000:.2f} ms median, "
            f"{p90 * 1000:.2f} ms p90, {len(text)} bytes of text"
        )
        connection.disconnect()


if __name__ == "__main__":
    main()
