"""Scalability and coordination overhead of a fleet of real ``shim worker`` processes (the seed's
full-system benchmarks 2 and 4).

For each fleet size (default 1, 3, 5 and 10 workers) the script starts that many ``shim worker``
processes (``pytest_shim.fleet.Fleet``: ``python -m shim_core.cli worker --redis URL --namespace
NS ...``), waits until every one is registered and has run an untimed warm-up round, and only
then starts the clock. It adds 100 tasks of 0.1 s each with one ``add_many`` and stops the clock
at the ``completed_at`` (server clock) of the last task to finish; the start is Redis ``TIME``
just before the ``add_many``, so both ends are on the same clock and the polling that notices the
end adds nothing.

Two task bodies, each on the same fleet:

* ``python``: the ``python`` executor calling ``perf._scale_tasks:pause`` (``time.sleep``).
* ``sim``: the ``sim`` executor (``duration`` 0.1 s in ``--sim-steps`` steps, default 4; each step
  reports progress and writes a checkpoint, as a simulated agent task would).

Reported per run: wall time, the ideal ``tasks x duration / workers``, overhead % =
``(wall - ideal) / ideal``, speed-up over the 1-worker run and efficiency (speed-up / workers), the
mean time a task was held (claim to completion, ``actual_duration``), and Redis commands per task
(``INFO commandstats`` delta over the run: claims, completions, progress, checkpoints, heartbeats,
reaper passes, everything). With whole tasks, ``ceil(tasks / workers) x duration`` is the least
wall time possible (3.4 s for 100 tasks on 3 workers, not 3.33 s); the table shows that bound
too, so its share of the overhead is visible.

The floor: after each fleet, as many bare processes pop the same number of items from a Redis
list, sleep the same time per item and are timed the same way (``_floor.py``; ``--no-floor``
skips it). That is what the machine charges any Redis queue (the sleep's overshoot, a round trip
to a server woken from idle, processes sharing the cores); SHIM's overhead beyond it is its own.

The coordination overhead benchmark is the ``--overhead-workers`` (default 10) fleet, measured
``--overhead-repeat`` times (default 3): overhead %, and per task, the coordination time
``(wall - ideal) x workers / tasks``.

Run: ``PYTHONPATH=. python perf/scalability.py [--workers 1,3,5,10] [--tasks 100]
[--duration 0.1] [--executors python,sim] [--json out.json]`` (about 1.5 min at full scale).

As pytest: ``pytest perf/ --shim-workers=5`` runs both task bodies on a fleet of that size (the
``shim_fleet_factory`` fixture of SHIM's pytest plugin) and prints the figures in the terminal
summary. ``perf/pytest.ini`` keeps the repository's ``-n 2 --cov`` options out of it. The tests
assert behaviour only (every task completes), never timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from _floor import floor_run
from _server import add_server_args, describe, purge, redis_url

from pytest_shim.fleet import Fleet
from shim_core.config import Settings
from shim_core.keys import Keys
from shim_core.models import Task, TaskStatus
from shim_core.queue import TaskQueue

ROOT = Path(__file__).resolve().parent.parent
#: The ``python`` executor's task body (importable by the workers with ROOT on PYTHONPATH).
FUNCTION = "perf._scale_tasks:pause"
EXECUTORS = ("python", "sim")
#: Seconds between two looks at the queue's counts while a run is in progress.
POLL_S = 0.02
#: Server commands of one look (``stats()``: HGETALL + EXISTS), taken out of the run's count.
POLL_COMMANDS = 2


@dataclasses.dataclass
class Run:
    """One timed run: ``tasks`` tasks of ``duration`` s on a fleet of ``workers``."""

    executor: str
    workers: int
    tasks: int
    duration: float
    wall_s: float
    completed: int
    held_ms: float  # mean claim -> completion per task (the queue's actual_duration)
    first_claim_ms: float  # from the add_many to the first claim
    commands: int  # Redis commands during the run (polling excluded)

    @property
    def ideal_s(self) -> float:
        """The seed's ideal: total work spread evenly over the workers."""
        return self.tasks * self.duration / self.workers

    @property
    def bound_s(self) -> float:
        """The least wall time with whole tasks: the busiest worker runs ceil(tasks/workers)."""
        return math.ceil(self.tasks / self.workers) * self.duration

    @property
    def overhead_pct(self) -> float:
        return (self.wall_s - self.ideal_s) / self.ideal_s * 100

    @property
    def per_task_overhead_ms(self) -> float:
        """Coordination time per task: worker-seconds spent beyond the work, per task."""
        return (self.wall_s - self.ideal_s) * self.workers / self.tasks * 1000

    @property
    def commands_per_task(self) -> float:
        return self.commands / self.tasks

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("ideal_s", "bound_s", "overhead_pct", "per_task_overhead_ms"):
            data[name] = getattr(self, name)
        data["commands_per_task"] = self.commands_per_task
        return data


def make_tasks(executor: str, count: int, duration: float, tag: str, steps: int) -> list[Task]:
    """``count`` tasks of ``duration`` seconds for ``executor`` ('python' or 'sim')."""
    if executor == "python":
        params: dict[str, Any] = {"function": FUNCTION, "seconds": duration}
    elif executor == "sim":
        params = {"duration": duration, "progress_steps": steps}
    else:
        raise ValueError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    return [
        Task(id=f"{tag}-{i}", title=f"{executor} {duration} s", executor=executor, params=params)
        for i in range(count)
    ]


def _commands(probe: redis.Redis) -> int:
    """Commands the server has run so far (INFO itself left out)."""
    stats: dict[str, Any] = probe.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith("cmdstat_info"))


def _server_ms(probe: redis.Redis) -> float:
    seconds, micros = probe.time()
    return int(seconds) * 1000 + int(micros) / 1000


def wait_finished(queue: TaskQueue, before: int, count: int, timeout: float) -> int:
    """Poll until ``count`` more tasks are finished (complete or failed) than ``before``; returns
    how many looks it took. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    looks = 0
    while True:
        stats = queue.stats()
        looks += 1
        if stats.complete + stats.failed - before >= count:
            return looks
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stats.complete + stats.failed - before} of {count} finished")
        time.sleep(POLL_S)


def measure(
    queue: TaskQueue,
    probe: redis.Redis,
    *,
    executor: str,
    workers: int,
    tasks: int,
    duration: float,
    tag: str,
    steps: int = 4,
) -> Run:
    """Run ``tasks`` tasks on the (started, warmed-up) fleet of ``workers`` behind ``queue``."""
    batch = make_tasks(executor, tasks, duration, tag, steps)
    stats = queue.stats()
    before = stats.complete + stats.failed
    timeout = 60 + 3 * tasks * duration
    commands = _commands(probe)
    start_ms = _server_ms(probe)
    queue.add_many(batch)
    looks = wait_finished(queue, before, tasks, timeout)
    commands = _commands(probe) - commands - looks * POLL_COMMANDS - 1  # the TIME above
    done = [t for t in queue.get_many(t.id for t in batch) if t is not None]
    complete = [t for t in done if t.status is TaskStatus.COMPLETE and t.completed_at]
    end_ms = max((t.completed_at.timestamp() * 1000 for t in complete if t.completed_at), default=0)
    claims = [t.claimed_at.timestamp() * 1000 for t in complete if t.claimed_at]
    held = [t.actual_duration for t in complete if t.actual_duration is not None]
    return Run(
        executor=executor,
        workers=workers,
        tasks=tasks,
        duration=duration,
        wall_s=max(end_ms - start_ms, 0.0) / 1000,
        completed=len(complete),
        held_ms=statistics.fmean(held) if held else 0.0,
        first_claim_ms=(min(claims) - start_ms) if claims else 0.0,
        commands=commands,
    )


def warm_up(queue: TaskQueue, workers: int, executors: Sequence[str], tag: str) -> None:
    """An untimed round of zero-length tasks: scripts loaded, executors imported, every worker
    back in its blocking claim before the clock starts."""
    stats = queue.stats()
    before = stats.complete + stats.failed
    batch = [
        task
        for executor in executors
        for task in make_tasks(executor, 2 * workers, 0.0, f"{tag}-{executor}", 1)
    ]
    queue.add_many(batch)
    wait_finished(queue, before, len(batch), 60)
    time.sleep(0.2)


def python_path_env() -> str:
    """PYTHONPATH with the repository root first, so the workers import ``perf._scale_tasks``."""
    rest = os.environ.get("PYTHONPATH", "")
    return f"{ROOT}{os.pathsep}{rest}" if rest else str(ROOT)


def run_sizes(
    url: str,
    sizes: Sequence[int],
    *,
    executors: Sequence[str],
    tasks: int,
    duration: float,
    repeat: int,
    overhead_workers: int,
    overhead_repeat: int,
    heartbeat: float,
    steps: int,
    floor: bool = True,
    log: Callable[[str], None] = print,
) -> list[Run]:
    """Every fleet size in turn: start the fleet, warm up, time each executor, stop the fleet;
    with ``floor``, then time as many bare processes popping a Redis list (``_floor.py``)."""
    os.environ["PYTHONPATH"] = python_path_env()
    probe = redis.Redis.from_url(url, decode_responses=True)
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="shim-scale-") as logs:
            for size in sizes:
                namespace = f"scale{os.getpid()}-{size}"
                settings = Settings(redis_url=url, namespace=namespace)
                fleet = Fleet(settings, heartbeat=heartbeat, log_dir=Path(logs), allow=["python"])
                try:
                    started = time.perf_counter()
                    fleet.start(size)
                    warm_up(fleet.queue, size, executors, f"warm{size}")
                    log(f"{size} worker(s) up and warm in {time.perf_counter() - started:.1f} s")
                    times = max(repeat, overhead_repeat if size == overhead_workers else 1)
                    for executor in executors:
                        for n in range(times):
                            run = measure(
                                fleet.queue,
                                probe,
                                executor=executor,
                                workers=size,
                                tasks=tasks,
                                duration=duration,
                                tag=f"{executor}{size}-{n}",
                                steps=steps,
                            )
                            runs.append(run)
                            log(
                                f"  {executor:<6} {size:>2} workers: {run.wall_s:6.2f} s "
                                f"(ideal {run.ideal_s:.2f} s, overhead {run.overhead_pct:+.1f} %)"
                            )
                finally:
                    fleet.close()  # every worker is sent SIGTERM at once
                    _purge(probe, namespace)
                for _ in range(times if floor else 0):
                    wall = floor_run(url, workers=size, tasks=tasks, duration=duration)
                    run = Run("floor", size, tasks, duration, wall, tasks, 0.0, 0.0, 0)
                    runs.append(run)
                    log(
                        f"  floor  {size:>2} workers: {run.wall_s:6.2f} s "
                        f"(ideal {run.ideal_s:.2f} s, overhead {run.overhead_pct:+.1f} %)"
                    )
    finally:
        probe.close()
    return runs


def _purge(probe: redis.Redis, namespace: str) -> None:
    purge(probe, Keys(namespace).prefix.replace("{", "\\{").replace("}", "\\}") + "*")


def _median_runs(runs: Sequence[Run], repeat: int) -> list[Run]:
    """Per (executor, workers): the run with the median wall time of its first ``repeat``."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.executor, run.workers), []).append(run)
    chosen = []
    for group in groups.values():
        first = sorted(group[: max(repeat, 1)], key=lambda r: r.wall_s)
        chosen.append(first[(len(first) - 1) // 2])
    return chosen


def scale_table(runs: Sequence[Run], repeat: int = 1) -> list[str]:
    """The speed-up table: one line per executor and fleet size."""
    lines = [
        f"{'executor':<8} {'workers':>7} {'wall s':>7} {'ideal s':>7} {'bound s':>7} "
        f"{'overhead':>8} {'speed-up':>8} {'effic.':>6} {'held ms':>7} {'1st claim':>9} "
        f"{'cmds/task':>9} {'done':>5}"
    ]
    chosen = _median_runs(runs, repeat)
    single = {r.executor: r.wall_s for r in chosen if r.workers == 1}
    for r in sorted(chosen, key=lambda r: (r.executor, r.workers)):
        base = single.get(r.executor)
        speedup = base / r.wall_s if base and r.wall_s else float("nan")
        queue_cells = (  # the floor has no queue to ask
            f"{'-':>7} {'-':>9} {'-':>9}"
            if r.executor == "floor"
            else f"{r.held_ms:>7.1f} {r.first_claim_ms:>7.1f}ms {r.commands_per_task:>9.1f}"
        )
        lines.append(
            f"{r.executor:<8} {r.workers:>7} {r.wall_s:>7.2f} {r.ideal_s:>7.2f} "
            f"{r.bound_s:>7.2f} {r.overhead_pct:>+7.1f}% {speedup:>8.2f} "
            f"{speedup / r.workers:>6.2f} {queue_cells} {r.completed:>5}"
        )
    return lines


def overhead_table(runs: Sequence[Run], workers: int) -> list[str]:
    """The coordination overhead benchmark: every run of the ``workers`` fleet."""
    lines = [
        f"{'executor':<8} {'run':>3} {'wall s':>7} {'ideal s':>7} {'overhead':>8} "
        f"{'coord. ms/task':>14} {'held - work ms':>14} {'cmds/task':>9}"
    ]
    summary: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in runs:
        if r.workers != workers:
            continue
        counts[r.executor] = counts.get(r.executor, 0) + 1
        summary.setdefault(r.executor, []).append(r.overhead_pct)
        queue_cells = (
            f"{'-':>14} {'-':>9}"
            if r.executor == "floor"
            else f"{r.held_ms - r.duration * 1000:>14.1f} {r.commands_per_task:>9.1f}"
        )
        lines.append(
            f"{r.executor:<8} {counts[r.executor]:>3} {r.wall_s:>7.2f} {r.ideal_s:>7.2f} "
            f"{r.overhead_pct:>+7.1f}% {r.per_task_overhead_ms:>14.1f} {queue_cells}"
        )
    medians = {executor: statistics.median(values) for executor, values in summary.items()}
    for executor, values in summary.items():
        lines.append(
            f"{executor}: median overhead {medians[executor]:+.1f} % "
            f"over {len(values)} run(s) (seed target: < 5 %)"
        )
    if "floor" in medians:
        lines.append(
            "floor: bare processes popping a Redis list, one round trip per task and nothing "
            "recorded (the sleep's overshoot and a Redis woken from idle)"
        )
        for executor, median in medians.items():
            if executor != "floor":
                lines.append(f"{executor}: {median - medians['floor']:+.1f} % beyond the floor")
    return lines


def _sizes(text: str) -> list[int]:
    sizes = [int(p) for p in text.split(",") if p.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give worker counts >= 1, e.g. 1,3,5,10")
    return sizes


def _executors(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = sorted(set(chosen) - set(EXECUTORS))
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"executors are {', '.join(EXECUTORS)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=_sizes, default=[1, 3, 5, 10], metavar="N,N")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--duration", type=float, default=0.1, help="seconds per task")
    parser.add_argument(
        "--executors", type=_executors, default=list(EXECUTORS), metavar="python,sim"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median shown)")
    parser.add_argument("--overhead-workers", type=int, default=10, metavar="N")
    parser.add_argument("--overhead-repeat", type=int, default=3, metavar="R")
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, help="worker heartbeat s (default 10, as shim)"
    )
    parser.add_argument("--sim-steps", type=int, default=4, help="progress steps of a sim task")
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the floor: bare processes popping a Redis list, timed the same way",
    )
    parser.add_argument("--json", metavar="FILE")
    add_server_args(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with redis_url(args.redis_url, args.redis_server) as url:
        print(f"{describe(url)}; {args.tasks} tasks x {args.duration} s per run", flush=True)
        runs = run_sizes(
            url,
            args.workers,
            executors=args.executors,
            tasks=args.tasks,
            duration=args.duration,
            repeat=args.repeat,
            overhead_workers=args.overhead_workers,
            overhead_repeat=args.overhead_repeat,
            heartbeat=args.heartbeat,
            steps=args.sim_steps,
            floor=args.floor,
            log=lambda line: print(line, flush=True),
        )
    print("\n== scalability (speed-up over 1 worker; overhead = (wall - ideal) / ideal) ==")
    print("\n".join(scale_table(runs, args.repeat)))
    if args.overhead_workers in args.workers:
        print(f"\n== coordination overhead, {args.overhead_workers} workers ==")
        print("\n".join(overhead_table(runs, args.overhead_workers)))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "duration": args.duration,
                    "workers": args.workers,
                    "executors": args.executors,
                    "runs": [r.as_dict() for r in runs],
                },
                indent=2,
            )
        )
    incomplete = [r for r in runs if r.completed != r.tasks]
    return 1 if incomplete else 0


# --------------------------------------------------------------------------------- pytest form
PERF_TASKS = int(os.environ.get("SHIM_PERF_TASKS", "100"))
PERF_DURATION = float(os.environ.get("SHIM_PERF_DURATION", "0.1"))


@pytest.fixture
def scale_fleet(shim_fleet_factory: Callable[..., Fleet], monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """A warmed-up fleet of ``--shim-workers`` real worker processes (default 3); the factory
    closes it afterwards."""
    monkeypatch.setenv("PYTHONPATH", python_path_env())
    fleet = shim_fleet_factory(mode="process", heartbeat=10.0, allow=["python"])
    warm_up(fleet.queue, len(fleet.workers), EXECUTORS, "warm")
    return fleet


@pytest.mark.parametrize("executor", EXECUTORS)
def test_scalability(scale_fleet: Fleet, executor: str, perf_report: Callable[[str], None]) -> None:
    """Every task completes on the fleet; the figures go to the terminal summary."""
    probe = redis.Redis.from_url(scale_fleet.settings.redis_url, decode_responses=True)
    try:
        run = measure(
            scale_fleet.queue,
            probe,
            executor=executor,
            workers=len(scale_fleet.workers),
            tasks=PERF_TASKS,
            duration=PERF_DURATION,
            tag=f"scale-{executor}",
        )
    finally:
        probe.close()
    assert run.completed == PERF_TASKS
    assert run.wall_s > 0
    perf_report(
        f"scalability {executor}: {run.tasks} x {run.duration} s on {run.workers} workers: "
        f"wall {run.wall_s:.2f} s, ideal {run.ideal_s:.2f} s (bound {run.bound_s:.2f} s), "
        f"overhead {run.overhead_pct:+.1f} %, {run.per_task_overhead_ms:.1f} ms coordination "
        f"per task, held {run.held_ms:.1f} ms/task, {run.commands_per_task:.1f} Redis cmds/task"
    )


if __name__ == "__main__":
    sys.exit(main())
