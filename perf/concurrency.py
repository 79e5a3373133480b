"""Does ``shim worker --concurrency N`` scale? I/O-bound tasks drained by one real worker process
at each concurrency.

N tasks (default 500) whose body sleeps ``--sleep`` seconds (default 0.01: an I/O-bound task,
``python`` executor, ``perf._scale_tasks:pause``) are enqueued with ``add_many``; then one
``shim worker --concurrency C`` is started the way a user starts it and drains them. The clock
runs from the first completion to the last (server ``completed_at``), so the worker's start-up
does not count. Reported per concurrency: tasks/s and the speed-up over concurrency 1.

Run: ``PYTHONPATH=. python perf/concurrency.py [--tasks 500] [--sleep 0.01]
[--concurrency 1,10] [--json out.json]``.
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


def drain(url: str, concurrency: int, tasks: int, sleep: float, timeout: float) -> float:
    """Tasks per second of one worker at ``concurrency``, first to last completion."""
    settings = Settings.load(redis_url=url, namespace=f"conc{concurrency}-{os.getpid()}")
    connection = RedisConnectionManager(url)
    connection.connect()
    queue = TaskQueue(connection, settings)
    body = {"function": "perf._scale_tasks:pause", "seconds": sleep}
    ids = [f"c{i}" for i in range(tasks)]
    queue.add_many([Task(id=i, executor="python", params=body) for i in ids])
    worker = start_shim_worker(url, settings.namespace, "--concurrency", str(concurrency))
    try:
        deadline = time.monotonic() + timeout
        while queue.stats().complete < tasks:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not drained within {timeout:g} s")
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(30)
    done = [t.completed_at for t in queue.get_many(ids) if t is not None and t.completed_at]
    connection.disconnect()
    span = (max(done) - min(done)).total_seconds()
    # n completions span n - 1 gaps; the first task's own run is not inside the span.
    return (len(done) - 1) / span if span > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds each task sleeps")
    parser.add_argument("--concurrency", default="1,10", help="comma-separated (default 1,10)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", metavar="FILE")
    add_server_args(parser)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    rows = []
    with redis_url(args.redis_url, args.redis_server) as url:
        print(f"{describe(url)}; {args.tasks} tasks sleeping {args.sleep:g} s each")
        for level in levels:
            rate = drain(url, level, args.tasks, args.sleep, args.timeout)
            rows.append({"concurrency": level, "tasks_per_s": rate})
            speedup = rate / rows[0]["tasks_per_s"]
            print(f"  --concurrency {level:>3}: {rate:8.0f} tasks/s  ({speedup:.1f}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"sleep": args.sleep, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
