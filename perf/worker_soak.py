"""A long drain by one real ``shim worker`` process: does it run its last tasks as fast as its
first, and does its memory stay flat?

N no-op tasks (``python`` executor, ``perf._soak_tasks:bump``, default 30,000) are enqueued with
``add_many``; then one ``shim worker`` is started the way a user starts it (its own process, the
installed entry points) and drains them. Every ``--step`` tasks (default 5,000) the script records
the completion rate of that step and the worker's RSS (``/proc/<pid>/status``), sampling the
namespace's exact counts every 50 ms, and per task the worker's CPU time (``/proc``) and the time
Redis spent in SHIM's scripts (``INFO commandstats``): on a shared machine these vary much less
than the rate. ``--worker-args`` passes more options to the worker (``'--metrics-port 0'``).

Run: ``PYTHONPATH=. python perf/worker_soak.py [--tasks 100000 --step 10000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

from _server import add_server_args, describe, redis_url
from _worker import start_shim_worker

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def script_seconds(queue: TaskQueue) -> float:
    """Time Redis has spent running SHIM's scripts (INFO commandstats, FCALL and EVALSHA)."""
    stats = queue.client.info("commandstats")
    calls = ("cmdstat_fcall", "cmdstat_evalsha")
    return sum(float(stats.get(name, {}).get("usec", 0)) for name in calls) / 1e6


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
    url: str, namespace: str, queue: TaskQueue, total: int, step: int, *options: str
) -> list[dict[str, float]]:
    worker = start_shim_worker(url, namespace, "--heartbeat", "2", *options)
    steps: list[dict[str, float]] = []
    try:
        mark, mark_time, cpu, scripts = 0, None, 0.0, 0.0
        while mark < total:
            done = queue.stats().complete
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            if mark_time is None and done > 0:
                mark_time = time.perf_counter()
                cpu, scripts = cpu_seconds(worker.pid), script_seconds(queue)
            if mark_time is not None and done >= mark + step:
                now = time.perf_counter()
                cpu_now, scripts_now = cpu_seconds(worker.pid), script_seconds(queue)
                steps.append(
                    {"upto": mark + step, "rate": step / (now - mark_time),
                     "rss_kib": rss_kib(worker.pid),
                     "worker_cpu_us": (cpu_now - cpu) / step * 1e6,
                     "script_us": (scripts_now - scripts) / step * 1e6}
                )  # fmt: skip
                print(f"  tasks {mark + 1:>7}-{mark + step:<7} {steps[-1]['rate']:8.0f}/s  "
                      f"RSS {steps[-1]['rss_kib'] / 1024:6.1f} MiB  "
                      f"a task: worker CPU {steps[-1]['worker_cpu_us']:4.0f} us, "
                      f"Redis scripts {steps[-1]['script_us']:4.0f} us", flush=True)  # fmt: skip
                mark, mark_time, cpu, scripts = mark + step, now, cpu_now, scripts_now
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
    parser.add_argument(
        "--worker-args",
        default="",
        metavar="ARGS",
        help="More options of the worker, e.g. '--metrics-port 0' (its metrics server on).",
    )
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
        options = shlex.split(args.worker_args)
        steps = drain(url, settings.namespace, queue, args.tasks, args.step, *options)
        first, last = steps[0]["rate"], steps[-1]["rate"]
        rss = f"{steps[0]['rss_kib'] / 1024:.1f} -> {steps[-1]['rss_kib'] / 1024:.1f} MiB"
        print(f"last step at {last / first:.0%} of the first; RSS {rss}")
        if args.json:
            Path(args.json).write_text(json.dumps({"tasks": args.tasks, "steps": steps}, indent=2))
        connection.disconnect()


if __name__ == "__main__":
    main()
