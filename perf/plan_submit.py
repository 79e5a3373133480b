"""How long a large plan takes to read, check and enqueue: ``Supervisor.decompose`` and ``submit``.

A plan file of N tasks (default 5,000) is written first, shaped like a real one: every task has a
title, a type, a few params and 0-3 dependencies on earlier tasks (most on recent ones, some far
back), the ``sim`` executor coming from ``defaults``. Against a private redis-server (or
``--redis-url``), ``--repeat`` times (default 3) in one process:

1. ``Supervisor.decompose(path)``: read the YAML, check the plan (ids, dependencies, cycles,
   executors, types), compute waves, estimates and the critical path.
2. ``supervisor.submit(decomposition)``: write the run record and enqueue the N tasks.

The best and median of each are printed (the first run pays the imports of the plan reader). With
``--cli``, the same file also goes through ``shim plan FILE`` and ``shim submit FILE --redis URL``
in fresh processes, timed end to end (interpreter start and imports included).

Run: ``PYTHONPATH=. python perf/plan_submit.py [--tasks 5000] [--repeat 3] [--cli] [--json out]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _server import add_server_args, describe, redis_url

from shim_core import RedisConnectionManager, Settings
from shim_core.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
TYPES = ("code", "test", "document", "research", "analyze")


def plan_data(count: int, seed: int = 7) -> dict[str, Any]:
    """A plan of ``count`` tasks, each depending on 0-3 earlier ones."""
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    for i in range(count):
        task: dict[str, Any] = {
            "id": f"t{i:05d}",
            "title": f"Step {i} of the migration",
            "type": TYPES[i % len(TYPES)],
            "params": {"duration": 0.001, "shard": i % 16, "label": f"part-{i // 100}"},
        }
        wanted = min(i, rng.choice((0, 1, 1, 2, 2, 3)))
        if wanted:
            near = range(max(0, i - 20), i)
            picks = {rng.choice(near) if rng.random() < 0.8 else rng.randrange(i)}
            while len(picks) < wanted:
                picks.add(rng.randrange(i))
            task["deps"] = [f"t{j:05d}" for j in sorted(picks)]
        if i % 10 == 0:
            task["estimate"] = 5 + i % 7
        tasks.append(task)
    return {
        "name": f"plan-{count}",
        "defaults": {"executor": "sim", "priority": "normal"},
        "tasks": tasks,
    }


def write_plan(path: Path, count: int) -> None:
    path.write_text(yaml.safe_dump(plan_data(count), sort_keys=False), encoding="utf-8")


def time_api(url: str, path: Path, count: int, repeat: int) -> dict[str, Any]:
    """Seconds of each decompose and submit, and the tasks each submitted run holds."""
    connection = RedisConnectionManager(url)
    connection.connect()
    settings = Settings.load(redis_url=url, namespace=f"plan-submit-{os.getpid()}")
    started = time.perf_counter()
    supervisor = Supervisor(connection, settings)
    setup = time.perf_counter() - started
    decompose: list[float] = []
    submit: list[float] = []
    enqueued: list[int] = []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            decomposition = supervisor.decompose(str(path))
            decompose.append(time.perf_counter() - started)
            started = time.perf_counter()
            record = supervisor.submit(decomposition)
            submit.append(time.perf_counter() - started)
            stored = supervisor.queue.get_many(list(record.task_ids))
            enqueued.append(sum(1 for task in stored if task is not None))
        waves = len(decomposition.waves)
    finally:
        supervisor.stop()
        connection.disconnect()
    if enqueued != [count] * repeat:
        raise RuntimeError(f"expected {count} tasks per run, found {enqueued}")
    return {
        "setup_s": setup,
        "decompose_s": decompose,
        "submit_s": submit,
        "enqueued": enqueued,
        "waves": waves,
    }


def time_cli(url: str, path: Path) -> dict[str, float]:
    """Seconds of ``shim plan FILE`` and ``shim submit FILE --redis URL`` in fresh processes."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("SHIM_REDIS_URL", None)
    commands = {
        "shim_plan_s": ["plan", str(path)],
        "shim_submit_s": ["submit", str(path), "--redis", url, "-n", f"plan-cli-{os.getpid()}"],
    }
    found: dict[str, float] = {}
    for key, args in commands.items():
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "shim_core.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )
        found[key] = time.perf_counter() - started
    return found


def _line(name: str, values: list[float]) -> str:
    best, median = min(values), statistics.median(values)
    return f"{name:<10} best {best * 1000:7.0f} ms   median {median * 1000:7.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="tasks in the plan (5000)")
    parser.add_argument("--repeat", type=int, default=3, help="decompose + submit rounds (3)")
    parser.add_argument("--cli", action="store_true", help="also time `shim plan` / `submit`")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    add_server_args(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shim-plan-") as folder:
        path = Path(folder) / "plan.yaml"
        write_plan(path, args.tasks)
        with redis_url(args.redis_url, args.redis_server) as url:
            print(describe(url))
            figures = time_api(url, path, args.tasks, max(args.repeat, 1))
            if args.cli:
                figures |= time_cli(url, path)
    total = [d + s for d, s in zip(figures["decompose_s"], figures["submit_s"], strict=True)]
    print(f"plan of {args.tasks} tasks in {figures['waves']} waves ({path.name})")
    print(f"Supervisor() {figures['setup_s'] * 1000:.0f} ms (plugins loaded)")
    print(_line("decompose", figures["decompose_s"]))
    print(_line("submit", figures["submit_s"]))
    print(_line("both", total))
    for key in ("shim_plan_s", "shim_submit_s"):
        if key in figures:
            print(f"{key.removesuffix('_s').replace('_', ' '):<12} {figures[key] * 1000:7.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": args.tasks, **figures}, indent=2))


if __name__ == "__main__":
    main()
