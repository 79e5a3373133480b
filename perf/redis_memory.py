"""Redis memory per task, for sizing: queued, finished by a real worker, and after ``shim clean``.

On a private redis-server (or ``--redis-url``, in a fresh namespace): ``INFO memory``
``used_memory`` and the key count are read before anything is added (the namespace's scripts
loaded), after ``add_many`` of N ``sim`` tasks (``duration`` 0, the default 4 progress steps,
each checkpointed), after one real ``shim worker`` process drained them (results, logs and
checkpoints written as in production), and after ``shim clean`` with ``SHIM_RETENTION_MS=0``.
Each figure is the growth over the first reading divided by N. ``--payload B`` adds a string of
B bytes to each task's params, to show how a task's own size adds to it.

Run: ``PYTHONPATH=. python perf/redis_memory.py [--tasks 10000] [--payload 0]`` (~15 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from _server import add_server_args, describe, purge, redis_url

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.models import Task
from shim_core.queue import TaskQueue


def reading(queue: TaskQueue) -> tuple[int, int]:
    """(used_memory bytes, keys of the namespace)."""
    client = queue.client
    used = int(client.info("memory")["used_memory"])
    keys = sum(1 for _ in client.scan_iter(match=f"{queue.keys.prefix}*", count=1000))
    return used, keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks (default 10,000)")
    parser.add_argument("--payload", type=int, default=0, help="extra bytes of params per task")
    args = parser.parse_args(argv)
    namespace = f"mem{os.getpid()}"
    with redis_url(args.redis_url, args.redis_server) as url:
        print(describe(url))
        settings = Settings(redis_url=url, namespace=namespace)
        manager = RedisConnectionManager(url)
        manager.connect()
        queue = TaskQueue(manager, settings)
        queue.stats()  # scripts loaded, connection open
        rows: list[tuple[str, int, int]] = [("empty namespace", *reading(queue))]
        params: dict[str, object] = {"duration": 0}
        if args.payload:
            params["blob"] = "x" * args.payload
        tasks = [
            Task(id=f"m{i}", type="code", executor="sim", params=params) for i in range(args.tasks)
        ]
        for i in range(0, args.tasks, 1000):
            queue.add_many(tasks[i : i + 1000])
        rows.append((f"{args.tasks:,} tasks queued", *reading(queue)))

        env = {**os.environ, "SHIM_RETENTION_MS": "0"}
        cli = [sys.executable, "-m", "shim_core.cli"]
        worker = subprocess.Popen(
            [*cli, "worker", "--redis", url, "--namespace", namespace, "--default-executor", "sim"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        began = time.monotonic()
        try:
            while queue.stats().complete < args.tasks:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}")
                if time.monotonic() - began > 600:
                    raise SystemExit("the worker did not drain the queue within 600 s")
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        rows.append((f"{args.tasks:,} tasks completed", *reading(queue)))

        subprocess.run(
            [*cli, "clean", "--redis", url, "--namespace", namespace],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rows.append(("after shim clean (retention 0)", *reading(queue)))

        base_used = rows[0][1]
        print(f"\n{'state':<32} {'used_memory':>13} {'keys':>7} {'bytes/task':>11}")
        for label, used, keys in rows:
            per_task = (used - base_used) / args.tasks
            print(f"{label:<32} {used:>13,} {keys:>7,} {per_task:>11,.0f}")
        purge(queue.client, f"{queue.keys.prefix}*")
        manager.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
