"""Instructions redis-server executes per task, counted by callgrind: the server-side cost of
SHIM's scripts, a figure that hardly moves between runs (unlike times on a shared machine).

A private redis-server runs under ``valgrind --tool=callgrind``, counting only what its command
dispatcher (``call``) executes: every command and script, not the event loop or the network.
Around each phase the counters are zeroed and dumped (``callgrind_control``):

* ``add``            ``TaskQueue.add`` of one task, ``--adds`` times (default 200)
* ``add_many``       one ``add_many`` of ``--batch`` tasks (default 1,000)
* ``add_many_deps``  the same, each task depending on one of the previous batch
* ``add_map``        one ``add_map`` of ``--batch`` tasks from one template (ids as add_many's)
* ``drain``          ``--drain`` tasks (default 2,000) run by one real ``shim worker`` process
                     (the ``python`` executor, a counter as task body), from its start to an
                     empty queue; includes its registration and heartbeats

Printed per task (per add for ``add``), in thousands of instructions, with the script calls and
server commands each phase made. Needs valgrind (``apt-get install valgrind``); redis-server
runs about 50 times slower under it, so the phases are small. ``SHIM_REDIS_FUNCTIONS=1`` measures
the scripts as a function library (``FCALL``).

Run: ``PYTHONPATH=. python perf/server_cost.py [--adds 200] [--batch 1000] [--drain 2000]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from _server import RedisServer
from _worker import start_shim_worker

from shim_core import RedisConnectionManager, Settings, Task, TaskQueue

#: valgrind starts redis-server in a few seconds; a loaded machine may take longer.
START_TIMEOUT = 60.0
#: A drain that has not finished by then failed.
DRAIN_TIMEOUT = 600.0
NAMESPACE = "server-cost"


class CountedServer:
    """A redis-server under callgrind, counting instructions in ``call`` only."""

    def __init__(self) -> None:
        self.dump_dir = Path(tempfile.mkdtemp(prefix="shim-server-cost-"))
        wrapper = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.dump_dir}/callgrind.out",
            "--collect-atstart=no",
            "--toggle-collect=call",
        ]
        self.server = RedisServer(wrapper=wrapper, start_timeout=START_TIMEOUT).start()
        self.url = self.server.url
        self.client = redis.Redis.from_url(self.url, decode_responses=True)

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.server.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @contextmanager
    def counting(self) -> Iterator[dict[str, Any]]:
        """Counts what the server executes inside the block: ``instructions`` and the
        ``commands`` it ran (INFO commandstats), filled in when the block ends."""
        found: dict[str, Any] = {}
        self.client.config_resetstat()
        self._control("--zero")
        yield found
        before = set(self.dump_dir.glob("callgrind.out*"))
        self._control("--dump")
        dumps = set(self.dump_dir.glob("callgrind.out*")) - before
        found["instructions"] = _total(max(dumps, key=lambda p: p.stat().st_mtime))
        stats = self.client.info("commandstats")
        found["commands"] = {
            name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
        }

    def stop(self) -> None:
        self.client.close()
        self.server.stop()
        shutil.rmtree(self.dump_dir, ignore_errors=True)


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _tasks(count: int, prefix: str, depends_on: str | None = None) -> list[Task]:
    return [
        Task(
            id=f"{prefix}-{n}",
            executor="python",
            params={"function": "perf._soak_tasks:bump", "n": n},
            dependencies=(f"{depends_on}-{n}",) if depends_on else (),
        )
        for n in range(count)
    ]


def _drain(server: CountedServer, queue: TaskQueue, count: int) -> None:
    """Run ``count`` queued tasks with one ``shim worker`` process, then stop it."""
    worker = start_shim_worker(server.url, NAMESPACE)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while queue.stats().complete < count:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not finish")
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(60)


def measure(adds: int, batch: int, drain: int) -> dict[str, dict[str, Any]]:
    """Each phase's instructions per task and commands, on a fresh counted server."""
    server = CountedServer()
    connection = RedisConnectionManager(server.url)
    connection.connect()
    queue = TaskQueue(connection, Settings.load(redis_url=server.url, namespace=NAMESPACE))
    phases: dict[str, dict[str, Any]] = {}

    def phase(name: str, tasks: int, run: Callable[[], object]) -> None:
        with server.counting() as found:
            run()
        found["tasks"] = tasks
        found["per_task"] = found["instructions"] / tasks
        phases[name] = found

    try:
        # Loads the add script; with SHIM_REDIS_FUNCTIONS=1 the first call finds no library and
        # the second loads it (a FUNCTION LOAD counted in the first phase would cost ~18k an add).
        for n in range(2):
            queue.add(Task(id=f"warm-up-{n}", executor="python"))
            queue.add_map(Task(executor="python"), [{"warm-up": n}])
        one = _tasks(adds, "one")
        phase("add", adds, lambda: [queue.add(task) for task in one])
        first = _tasks(batch, "batch")
        phase("add_many", batch, lambda: queue.add_many(first))
        second = _tasks(batch, "deps", depends_on="batch")
        phase("add_many_deps", batch, lambda: queue.add_many(second))
        template = Task(executor="python", params={"function": "perf._soak_tasks:bump"})
        items, ids = [{"n": n} for n in range(batch)], [f"map-{n}" for n in range(batch)]
        phase("add_map", batch, lambda: queue.add_map(template, items, ids=ids))
        server.client.flushall()
        queue.add_many(_tasks(drain, "drain"))
        phase("drain", drain, lambda: _drain(server, queue, drain))
    finally:
        connection.disconnect()
        server.stop()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=200, help="single adds (200)")
    parser.add_argument("--batch", type=int, default=1000, help="tasks per add_many (1,000)")
    parser.add_argument("--drain", type=int, default=2000, help="tasks the worker runs (2,000)")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind and callgrind_control on the PATH (apt-get install valgrind)")
    started = time.monotonic()
    phases = measure(args.adds, args.batch, args.drain)
    mode = "FCALL" if os.environ.get("SHIM_REDIS_FUNCTIONS") == "1" else "EVALSHA"
    print(f"redis-server instructions per task, counted by callgrind (scripts by {mode})")
    for name, found in phases.items():
        commands = found["commands"]
        scripts = commands.get("evalsha", 0) + commands.get("fcall", 0)
        print(
            f"  {name:14s} {found['per_task'] / 1000:8.1f} k   "
            f"({found['tasks']:,} tasks, {scripts:,} script calls, "
            f"{sum(commands.values()):,} commands)"
        )
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": mode, "phases": phases}, indent=2))


if __name__ == "__main__":
    main()
