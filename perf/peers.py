"""SHIM next to its peers, each through real worker processes started the way a user starts them.

Systems: SHIM (``shim worker``), BullMQ on Node.js, huey, Dramatiq, taskiq, SAQ, BullMQ's Python
port, Celery, RQ and arq. Each peer runs in an environment of its own under ``perf/.peers/``
(``python perf/peers.py --setup`` creates them; see ``perf/peers_setup.py``), SHIM with this
interpreter. All share one redis-server (a private one unless ``--redis-url``), with a FLUSHDB
before each system and phase. Every system runs the same task body (``perf/peer_drivers``).

Columns, per system (the median of ``--repeat`` runs; the runs of all systems interleave):

* enqueue/s: N tasks enqueued by a producer process, one library call per task.
* drain/s with 1 and with 4 worker processes: workers started, warmed up and idle, then frozen
  (SIGSTOP) while N tasks are enqueued, then released (SIGCONT); timed from the release to the
  last task body's clock reading.
* p50 / p99 ms from enqueue to task start: samples sent one every ``--interval`` seconds to one
  idle worker, each carrying ``time.time()``; the body records ``time.time() - sent``.

Run: ``python perf/peers.py`` (about 21 min with the defaults on 2 cores), ``--quick`` for a
smoke run, ``--only shim,huey`` for some rows, ``--json out.json`` for every sample.
The target database is flushed: with ``--redis-url`` point it at a scratch db.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from _peers_run import RunFailed, measure
from _peers_systems import SYSTEMS, System
from _server import add_server_args, redis_url
from peers_setup import setup

#: (cell key, header, higher is better)
COLUMNS: list[tuple[str, str, bool]] = [
    ("enqueue_per_s", "enqueue/s", True),
    ("drain1_per_s", "drain/s 1w", True),
    ("drainN_per_s", "drain/s {n}w", True),
    ("p50_ms", "p50 ms", False),
    ("p99_ms", "p99 ms", False),
]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _versions() -> dict[str, str]:
    node = shutil.which("node")
    node_version = "not found"
    if node:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
        node_version = done.stdout.strip()
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "node": node_version,
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu})",
        "shim": metadata.version("shim"),
        "redis_py": metadata.version("redis"),
    }


def _redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_cells(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every numeric cell over the successful runs."""
    keys = [k for k, v in runs[0].items() if isinstance(v, float | int)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if key.endswith("_ms") else f"{value:,.0f}"


def render(results: dict[str, dict[str, Any]], many: int, tasks: int) -> str:
    """The table and a ratio line per SHIM row; ``*`` marks a drain cut short by the cap."""
    heads = [h.format(n=many) for _, h, _ in COLUMNS]
    widths = [max(len(h), 9) for h in heads]
    head = f"{'system':<22} {'version':<9} " + " ".join(
        f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)
    )
    lines = [head, "-" * len(head)]

    def row(label: str, version: str, cells: dict[str, float]) -> str:
        out = []
        for (k, _, _), w in zip(COLUMNS, widths, strict=True):
            ran = cells.get(k.replace("_per_s", "_ran"), tasks) if k.startswith("drain") else tasks
            out.append(f"{_fmt(cells.get(k), k) + ('*' if ran < tasks else ''):>{w}}")
        return f"{label:<22} {version:<9} {' '.join(out)}"

    for name, result in results.items():
        if "skipped" in result:
            lines.append(f"{name:<22} skipped: {result['skipped']}")
            continue
        lines.append(row(name, result["version"], result["median"]))
        for key, label in (("batch_per_s", "add_many"), ("map_per_s", "add_map")):
            if key in result["median"]:
                batch = {"enqueue_per_s": result["median"][key]}
                lines.append(row(f"{name} {label} batch", result["version"], batch))
    lines.append("-" * len(head))
    lines.extend(_ratios(results, heads, widths))
    return "\n".join(lines)


def _ratios(results: dict[str, dict[str, Any]], heads: list[str], widths: list[int]) -> list[str]:
    """'SHIM / best peer' per column: like for like (concurrency 1), and SHIM -c 10 vs any."""
    measured = {n: r for n, r in results.items() if "median" in r}
    peers = {n: r for n, r in measured.items() if not SYSTEMS[r["key"]].is_shim}
    lines: list[str] = []
    pairs = [("shim", "peers at concurrency 1"), ("shim-c10", "any peer row")]
    for key, among in pairs:
        shim = next((r for r in measured.values() if r["key"] == key), None)
        pool = {
            n: r for n, r in peers.items() if key != "shim" or SYSTEMS[r["key"]].concurrency == 1
        }
        if shim is None or not pool:
            continue
        ratios, bests = [], []
        for (k, _, higher), head, w in zip(COLUMNS, heads, widths, strict=True):
            values = {n: r["median"][k] for n, r in pool.items() if k in r["median"]}
            if not values or k not in shim["median"]:
                ratios.append(f"{'-':>{w}}")
                continue
            best = (max if higher else min)(values, key=values.__getitem__)
            ratios.append(f"{shim['median'][k] / values[best]:>{w}.2f}")
            bests.append(f"{head}: {best}")
        label = f"{SYSTEMS[key].name} / best peer"
        lines.append(f"{label:<22} {'':<9} " + " ".join(ratios))
        lines.append(f"  (best among {among}: {'; '.join(bests)})")
    lines.append(
        "  ratios above 1 favour SHIM for the throughput columns; for the latency columns"
        " (lower is better) SHIM is ahead below 1"
    )
    return lines


def notes(results: dict[str, dict[str, Any]]) -> str:
    """How each row was driven, with its client library versions."""
    out = ["how each row ran (one worker process = one command below):"]
    for name, result in results.items():
        system = SYSTEMS[result["key"]]
        client = ""
        if "versions" in result:
            v = result["versions"]
            client = f" [redis client {v.get('redis')}" + (
                f", hiredis {v['hiredis']}]" if v.get("hiredis") else "]"
            )
        out.append(f"  {name}: {system.how}{client}")
    return "\n".join(out)


def report(payload: dict[str, Any]) -> str:
    """The table, its notes and the load line of a finished run (as ``--json`` saved it)."""
    info, args, results = payload["info"], payload["args"], payload["results"]
    tasks = args["tasks"]
    lines = [render(results, args["workers"], tasks)]
    if any(
        r["median"].get(k, tasks) < tasks
        for r in results.values()
        if "median" in r
        for k in ("drain1_ran", "drainN_ran")
    ):
        lines.append(
            f"* drain cut short after {args['drain_cap']:g} s: the rate of the tasks run by then"
        )
    lines += ["", notes(results), ""]
    lines.append(
        f"{info['date']}, {info['machine']}; redis-server {info['redis_server']}, "
        f"Python {info['python']}, node {info['node']}"
    )
    lines.append(
        f"load average before: {info['load_before']}; after: {info['load_after']}; "
        f"total {info['seconds']:.0f} s"
    )
    return "\n".join(lines)


def run_all(
    systems: list[System], url: str, args: argparse.Namespace, scratch: Path
) -> dict[str, dict[str, Any]]:
    """Every repeat of every system, interleaved; returns name -> result."""
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
    errors: dict[str, list[str]] = {s.name: [] for s in systems}
    skipped = {s.name: reason for s in systems if (reason := s.missing())}
    for rep in range(args.repeat):
        for system in systems:
            if system.name in skipped:
                continue
            started = time.perf_counter()
            folder = scratch / f"{rep}-{system.key}"
            try:
                cells = measure(
                    system, url, folder, tasks=args.tasks, samples=args.samples,
                    interval=args.interval, timeout=args.timeout, many=args.workers,
                    cap=args.drain_cap,
                )  # fmt: skip
            except (RunFailed, OSError, ValueError, redis.RedisError) as exc:
                errors[system.name].append(str(exc))
                print(f"  run {rep + 1} {system.name}: failed: {exc}", flush=True)
                continue
            cells["drainN_per_s"] = cells.pop(f"drain{args.workers}_per_s")
            cells["drainN_ran"] = cells.pop(f"drain{args.workers}_ran")
            runs[system.name].append(cells)
            took = time.perf_counter() - started
            print(f"  run {rep + 1} {system.name}: ok ({took:.0f} s)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for system in systems:
        result: dict[str, Any] = {"key": system.key}
        if system.name in skipped:
            result["skipped"] = skipped[system.name]
        elif not runs[system.name]:
            result["skipped"] = "failed: " + errors[system.name][-1]
        else:
            good = runs[system.name]
            versions = good[0]["versions"]
            result |= {
                "version": str(versions.get("version")),
                "versions": versions,
                "runs": [{k: v for k, v in r.items() if k != "versions"} for r in good],
                "median": median_cells(good),
                "errors": errors[system.name],
            }
        results[system.name] = result
    return results


def _select(only: str, parser: argparse.ArgumentParser) -> list[System]:
    keys = [s.strip() for s in only.split(",") if s.strip()] or list(SYSTEMS)
    unknown = sorted(set(keys) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    return [SYSTEMS[k] for k in keys]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--setup", action="store_true", help="create the peer environments")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(SYSTEMS))
    parser.add_argument("--tasks", type=int, help="tasks per enqueue and drain (5000)")
    parser.add_argument("--workers", type=int, default=4, help="processes of the second drain")
    parser.add_argument("--samples", type=int, help="latency samples per run (300)")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between samples")
    parser.add_argument("--repeat", type=int, help="runs per system, median shown (3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per system run")
    parser.add_argument(
        "--drain-cap",
        type=float,
        default=30.0,
        help="cut a drain short after this many seconds (its rate then counts the tasks run)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke defaults: 200 tasks, 30 samples, 1 run"
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure here")
    parser.add_argument("--logs", metavar="DIR", help="keep the processes' logs here")
    parser.add_argument("--show", metavar="FILE", help="print the table of a saved --json run")
    args = parser.parse_args(argv)
    if args.setup:
        return setup()
    if args.show:
        print(report(json.loads(Path(args.show).read_text())))
        return 0
    defaults = (200, 30, 1) if args.quick else (5000, 300, 3)
    for name, default in zip(("tasks", "samples", "repeat"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.tasks, args.workers, args.samples, args.repeat) < 1:
        parser.error("--tasks, --workers, --samples and --repeat must be at least 1")
    systems = _select(args.only, parser)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    started = time.perf_counter()
    info: dict[str, Any] = {"date": datetime.now().isoformat(timespec="minutes"), **_versions()}
    info["load_before"] = _load()
    with (
        redis_url(args.redis_url, args.redis_server) as url,
        tempfile.TemporaryDirectory(prefix="shim-perf-peers-") as temporary,
    ):
        scratch = Path(args.logs or temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        info["redis_server"] = _redis_version(url)
        print(
            f"{info['date']}  {info['machine']}\n"
            f"redis-server {info['redis_server']} at {url}; Python {info['python']}, "
            f"node {info['node']}; SHIM {info['shim']} (redis-py {info['redis_py']})\n"
            f"load average before: {info['load_before']}\n"
            f"{args.tasks:,} tasks per enqueue and drain, {args.samples} latency samples every "
            f"{args.interval * 1000:g} ms, {args.repeat} run(s) per system, "
            f"limit {args.timeout:g} s per run",
            flush=True,
        )
        results = run_all(systems, url, args, scratch)
    info["load_after"] = _load()
    info["seconds"] = time.perf_counter() - started
    payload = {"info": info, "args": vars(args), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    print()
    print(report(payload))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: every process was stopped
        print(f"interrupted ({exc or 'Ctrl-C'}); all workers stopped", file=sys.stderr)
        sys.exit(130)
