"""A long drain by one real ``shim worker`` process: does it run its last tasks as fast as its
first, and does its memory stay flat?

N no-op tasks (``python`` executor, ``perf._soak_tasks:bump``, default 30,000) are enqueued with
``add_many``; then one ``shim worker`` is started the way a user starts it (its own process, the
installed entry points) and drains them. Every ``--step`` tasks (default 5,000) the script records
the completion rate of that step and the worker's RSS (``/proc/<pid>/status``), sampling the
namespace's exact counts every 50 ms.

Run: ``PYTHONPATH=. python perf/worker_soak.py [--tasks 100000 --step 10000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _server import add_server_args, describe, redis_url
from _worker import start_shim_worker

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def enqueue(queue: TaskQueue, count: int) -> float:
    body = {"function": "perf._soak_tasks:bump"}
    tasks = [Task(id=f"s{i}", executor="python", params=body) for i in range(count)]
    started = time.perf_counter()
    for i in range(0, count, 5_000):
        queue.add_many(tasks[i : i + 5_000])
    return time.perf_counter() - started


def drain(
    url: str, namespace: str, queue: TaskQueue, total: int, step: int
) -> list[dict[str, float]]:
    worker = start_shim_worker(url, namespace, "--heartbeat", "2")
    steps: list[dict[str, float]] = []
    try:
        mark, mark_time = 0, None
        while mark < total:
            done = queue.stats().complete
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            if mark_time is None and done > 0:
                mark_time = time.perf_counter()
            if mark_time is not None and done >= mark + step:
                now = time.perf_counter()
                steps.append(
                    {"upto": mark + step, "rate": step / (now - mark_time),
                     "rss_kib": rss_kib(worker.pid)}
                )  # fmt: skip
                print(f"  tasks {mark + 1:>7}-{mark + step:<7} {steps[-1]['rate']:8.0f}/s  "
                      f"RSS {steps[-1]['rss_kib'] / 1024:6.1f} MiB", flush=True)  # fmt: skip
                mark, mark_time = mark + step, now
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(30)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--step", type=int, default=5_000)
    parser.add_argument("--json", metavar="FILE")
    add_server_args(parser)
    args = parser.parse_args()
    with redis_url(args.redis_url, args.redis_server) as url:
        settings = Settings.load(redis_url=url, namespace=f"soak{os.getpid()}")
        connection = RedisConnectionManager(url)
        connection.connect()
        queue = TaskQueue(connection, settings)
        took = enqueue(queue, args.tasks)
        print(
            f"{describe(url)}\nenqueued {args.tasks} tasks in {took:.2f} s; one shim worker drains:"
        )
        steps = drain(url, settings.namespace, queue, args.tasks, args.step)
        first, last = steps[0]["rate"], steps[-1]["rate"]
        rss = f"{steps[0]['rss_kib'] / 1024:.1f} -> {steps[-1]['rss_kib'] / 1024:.1f} MiB"
        print(f"last step at {last / first:.0%} of the first; RSS {rss}")
        if args.json:
            Path(args.json).write_text(json.dumps({"tasks": args.tasks, "steps": steps}, indent=2))
        connection.disconnect()


if __name__ == "__main__":
    main()
