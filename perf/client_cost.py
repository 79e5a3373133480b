"""Instructions the client executes per call, counted by cachegrind: the Python side of a hot
path, a figure that hardly moves between runs (unlike times on a shared machine). The
counterpart of ``server_cost.py``, which counts what redis-server executes.

Each phase runs a child Python process under ``valgrind --tool=cachegrind`` twice, once making
no calls and once making ``--count`` of them, against a private redis-server (or
``--redis-url``); the difference divided by ``--count`` is the cost of one call, start-up and
imports left out:

* ``add``      ``TaskQueue.add`` of one new task (building the ``Task`` included), one call each
* ``add_many`` ``TaskQueue.add_many`` of ``--count`` new tasks in one call, per task
* ``add_map``  ``TaskQueue.add_map`` of ``--count`` items in one call (the same tasks), per task
* ``decode``   decoding the stored hash of a claimed task into a ``Task`` (what a worker does for
               each task it claims; no Redis)
* ``huey``     huey's enqueue of one task (``perf/peer_drivers/huey_app.py``), when its
               virtualenv exists (``python perf/peers.py --setup``): the peer a user would pick
               for one-call enqueues, on the same server

Needs valgrind (``apt-get install valgrind``); about 10 s per phase and core.

Run: ``PYTHONPATH=. python perf/client_cost.py [--count 2000]
[--phases add,add_many,add_map,decode,huey] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _cachegrind as cachegrind
from _server import add_server_args, redis_url

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
DRIVERS = PERF / "peer_drivers"
HUEY_PYTHON = PERF / ".peers" / "huey" / "bin" / "python"
PHASES = ("add", "add_many", "add_map", "decode", "huey")
#: A claimed task's hash as the claim script returns it (fields of a python-executor task).
CLAIMED = {
    "id": "46df7a522a0746468a45fd53fe4baeeb", "type": "code", "priority": "normal",
    "executor": "python", "params": '{"function":"perf._peer_tasks:bump","sent":1.5}',
    "max_attempts": "3", "backoff_ms": "1000", "max_stalled": "1", "status": "running",
    "attempts": "1", "lease": "1764481234567890", "worker_id": "w-1",
    "created_at": "1764481234567", "claimed_at": "1764481234568",
    "lease_deadline": "1764481264568", "seq": "12", "deps_left": "0",
    "ready_at": "1764481234567",
}  # fmt: skip


def child(phase: str, count: int, url: str) -> None:
    """The calls of one phase, made in this (counted) process."""
    if phase == "huey":
        sys.path.insert(0, str(DRIVERS))
        import huey_app  # type: ignore[import-not-found]  # in huey's virtualenv only

        for _ in range(count):
            huey_app.bump(1.5)
        return
    from shim_core import RedisConnectionManager, Settings, Task, TaskQueue
    from shim_core.serde import task_from_hash

    def task() -> Task:
        return Task(executor="python", params={"function": "perf._peer_tasks:bump", "sent": 1.5})

    if phase == "decode":
        for _ in range(count):
            task_from_hash(CLAIMED)
        return
    connection = RedisConnectionManager(url)
    queue = TaskQueue(connection, Settings.load(redis_url=url, namespace=f"cc{os.getpid()}"))
    queue.add(task())  # the script loaded, the connection made: outside the difference
    if phase == "add":
        for _ in range(count):
            queue.add(task())
    elif phase == "add_map":
        template = Task(executor="python", params={"function": "perf._peer_tasks:bump"})
        queue.add_map(template, [{"sent": 1.5}])  # the script loaded: outside the difference
        if count:
            queue.add_map(template, ({"sent": 1.5} for _ in range(count)))
    elif count:
        queue.add_many([task() for _ in range(count)])
    connection.disconnect()


def instructions(phase: str, count: int, url: str) -> int:
    """Instructions of a child process making ``count`` calls of ``phase``."""
    python = str(HUEY_PYTHON) if phase == "huey" else sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIM_PEERS_URL": url, "SHIM_PEERS_QUEUE": "cc"}
    return cachegrind.instructions([python, __file__, "--child", phase, str(count), url], env)


def measure(phases: list[str], count: int, url: str) -> dict[str, Any]:
    """Instructions per call of each phase. The counted processes run side by side, one per
    core: a count does not depend on what else runs."""
    runs = [(phase, n) for phase in phases for n in (count, 0)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counted = dict(zip(runs, pool.map(lambda run: instructions(*run, url), runs), strict=True))
    return {phase: (counted[phase, count] - counted[phase, 0]) / count for phase in phases}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--count", type=int, default=2000, help="calls per phase (2,000)")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"unknown phase(s): {', '.join(unknown)}")
    if args.count < 1:
        parser.error("--count must be at least 1")
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind on the PATH (apt-get install valgrind)")
    if "huey" in phases and not HUEY_PYTHON.exists():
        print("huey: no virtualenv (python perf/peers.py --setup); left out", file=sys.stderr)
        phases.remove("huey")
    started = time.monotonic()
    with redis_url(args.redis_url, args.redis_server) as url:
        per_call = measure(phases, args.count, url)
    print(f"client instructions per call, counted by cachegrind ({args.count:,} calls a phase)")
    for phase, cost in per_call.items():
        print(f"  {phase:10s} {cost / 1000:8.1f} k")
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"count": args.count, "per_call": per_call}))


if __name__ == "__main__":
    main()
