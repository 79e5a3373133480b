"""How long a ``shim worker`` process takes to be ready, and where its import time goes.

1. Ready time: a real ``python -m shim_core.cli worker --redis URL`` process is started against a
   private redis-server (or ``--redis-url``); the clock runs from just before ``Popen`` to the
   moment its stderr shows ``worker <id> joined ...`` (printed once it has registered). The
   worker is then stopped with SIGTERM. Repeated ``--runs`` times (default 5); the median and
   the minimum are printed, with the CPU time the process had used by then (user + system, from
   /proc on Linux): on a shared machine it varies much less than the wall time.
2. Import time: ``python -X importtime -m shim_core.cli worker --help`` once, and the same for
   one real worker start; the self time of every imported module is summed per top-level package
   (``redis``, ``click``, ``asyncio``, ``shim_core``...) and the biggest are printed, with the
   modules of largest cumulative time.
3. ``shim --help`` and ``shim worker --help``: wall and CPU time of ``--runs`` runs each.
4. With ``--huey``: huey's consumer (``huey_consumer huey_app.huey``, from the peer virtualenv
   of ``perf/peers.py --setup``) started the same way, each start right after a SHIM worker's
   so both see the same moment of the machine. Its clock stops at ``Huey consumer started``,
   which huey logs before its first Redis call (SHIM's ``joined`` comes after registering:
   a few round trips that favour huey by milliseconds).
5. With ``--instructions`` (needs valgrind): the instructions the CPU executes, counted by
   cachegrind, for a worker start up to its ``joined`` line (the process ends there) and for the
   two ``--help``. They hardly move between runs, unlike the times on a
   machine shared with other jobs: the figure to compare two trees by. About 10 s each.

Run: ``PYTHONPATH=. python perf/worker_startup.py [--runs 5] [--top 12] [--huey]
[--instructions] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _cachegrind as cachegrind
from _server import add_server_args, describe, redis_url
from peers_setup import venv_python

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a worker may take to say it joined before the run counts as failed.
READY_TIMEOUT = 60.0
_JOINED = re.compile(r"^worker \S+ joined ")
_HUEY_STARTED = re.compile(r"Huey consumer started")
DRIVERS = Path(__file__).resolve().parent / "peer_drivers"
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _env() -> dict[str, str]:
    """This environment, with the repository first on the path. Bytecode is written (as an
    installed package has it): with PYTHONDONTWRITEBYTECODE set, every module changed since its
    .pyc would be compiled again at each start, which is not what a user's worker pays."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    for name in (
        "SHIM_REDIS_URL",
        "SHIM_NAMESPACE",
        "COVERAGE_PROCESS_START",
        "PYTHONDONTWRITEBYTECODE",
    ):
        env.pop(name, None)
    return env


def _worker_command(url: str, namespace: str, *python_options: str) -> list[str]:
    return [
        sys.executable,
        *python_options,
        "-m",
        "shim_core.cli",
        "worker",
        "--redis",
        url,
        "--namespace",
        namespace,
    ]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_worker(
    url: str, namespace: str, *python_options: str
) -> tuple[float, float | None, list[str]]:
    """Seconds from Popen to the ``joined`` line, the CPU seconds the worker had used then, and
    every stderr line read until then."""
    return _start_until(_worker_command(url, namespace, *python_options), _env(), _JOINED)


def huey_consumer() -> Path:
    """huey's consumer script in the peer virtualenv of ``perf/peers.py --setup``."""
    return venv_python("huey").parent / "huey_consumer"


def start_huey(url: str) -> tuple[float, float | None, list[str]]:
    """:func:`start_worker` for huey's consumer, as ``perf/peers.py`` starts it."""
    env = {**_env(), "SHIM_PEERS_URL": url, "PYTHONPATH": str(DRIVERS)}
    return _start_until([str(huey_consumer()), "huey_app.huey"], env, _HUEY_STARTED, cwd=DRIVERS)


def _start_until(
    argv: list[str], env: dict[str, str], ready: re.Pattern[str], cwd: Path | None = None
) -> tuple[float, float | None, list[str]]:
    """Start ``argv``; seconds from Popen to its first stderr line that ``ready`` finds, the
    CPU seconds it had used then, and every stderr line read until then. Stopped with SIGTERM."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stderr, selectors.EVENT_READ)
            deadline = started + READY_TIMEOUT
            while True:
                left = deadline - time.perf_counter()
                if left <= 0 or not selector.select(left):
                    raise RuntimeError(f"not ready within {READY_TIMEOUT:g} s: {argv[0]}")
                line = proc.stderr.readline()
                if not line:
                    tail = "".join(lines[-5:])
                    raise RuntimeError(f"{argv[0]} exited ({proc.wait()}) before ready:\n{tail}")
                lines.append(line)
                if ready.search(line):
                    return time.perf_counter() - started, cpu_seconds(proc.pid), lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def parse_importtime(lines: list[str]) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of every ``-X importtime`` line."""
    found = []
    for line in lines:
        match = _IMPORT_LINE.match(line)
        if match:
            found.append((match[4], int(match[1]), int(match[2])))
    return found


def import_costs(rows: list[tuple[str, int, int]], top: int) -> dict[str, Any]:
    """Total import time, self time per top-level package and the largest cumulative times."""
    packages: dict[str, int] = {}
    for module, own, _ in rows:
        root = module.split(".")[0]
        packages[root] = packages.get(root, 0) + own
    biggest = sorted(packages.items(), key=lambda item: -item[1])[:top]
    cumulative = sorted(rows, key=lambda row: -row[2])[:top]
    return {
        "total_ms": sum(own for _, own, _ in rows) / 1000,
        "modules": len(rows),
        "packages_ms": {name: own / 1000 for name, own in biggest},
        "cumulative_ms": {name: cum / 1000 for name, _, cum in cumulative},
    }


def help_import_rows() -> list[tuple[str, int, int]]:
    """The import lines of ``python -X importtime -m shim_core.cli worker --help``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shim_core.cli", "worker", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return parse_importtime(done.stderr.splitlines())


def time_command(*argv: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of ``python -m shim_core.cli argv...``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "shim_core.cli", *argv],
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


#: A worker start in one process, up to its ``joined`` line: the process ends there (no loop, no
#: clean-up), as the clock of :func:`start_worker` stops there.
_START_IN_PROCESS = """
import os, sys

class UntilJoined:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        written = self.stream.write(text)
        if " joined " in text:
            self.stream.flush()
            os._exit(0)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stderr = UntilJoined(sys.stderr)
from shim_core.cli import main
main(sys.argv[1:])
"""


def instructions(code: str, *argv: str) -> int:
    """Instructions executed by ``python -c code argv...``, counted by valgrind's cachegrind."""
    return cachegrind.instructions([sys.executable, "-c", code, *argv], _env())


def count_instructions(url: str, namespace: str) -> dict[str, int]:
    """Instructions of a worker start (to ``joined``), ``shim worker --help``, ``shim --help``."""
    main = "import sys\nfrom shim_core.cli import main\nmain(sys.argv[1:])\n"
    commands = {
        "worker start": (_START_IN_PROCESS, "worker", "--redis", url, "--namespace", namespace),
        "shim worker --help": (main, "worker", "--help"),
        "shim --help": (main, "--help"),
    }
    for code, *argv in commands.values():  # bytecode written first, as a real start finds it
        subprocess.run(
            [sys.executable, "-c", code, *argv],
            env=_env(),
            capture_output=True,
            timeout=120,
            check=True,
        )
    return {what: instructions(*command) for what, command in commands.items()}


def _print_costs(title: str, costs: dict[str, Any]) -> None:
    print(f"{title}: {costs['total_ms']:.0f} ms in {costs['modules']} modules")
    print("  self time per top-level package:")
    for name, ms in costs["packages_ms"].items():
        print(f"    {name:<28} {ms:7.1f} ms")
    print("  largest cumulative:")
    for name, ms in costs["cumulative_ms"].items():
        print(f"    {name:<40} {ms:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="worker starts (default 5)")
    parser.add_argument("--top", type=int, default=12, help="import costs listed (default 12)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions executed, with valgrind (about 30 s)",
    )
    parser.add_argument(
        "--huey",
        action="store_true",
        help="also start huey's consumer after each worker (needs: python perf/peers.py --setup)",
    )
    add_server_args(parser)
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on the PATH")
    if args.huey and not huey_consumer().exists():
        parser.error(f"--huey needs {huey_consumer()} (run: python perf/peers.py --setup)")
    counted: dict[str, int] = {}
    with redis_url(args.redis_url, args.redis_server) as url:
        print(describe(url))
        namespace = f"startup-{os.getpid()}"
        start_worker(url, namespace)  # warm the file cache; not counted
        if args.huey:
            start_huey(url)
        starts, hueys = [], []
        for _ in range(args.runs):
            starts.append(start_worker(url, namespace))
            if args.huey:
                hueys.append(start_huey(url))
        _, _, traced = start_worker(url, namespace, "-X", "importtime")
        if args.instructions:
            counted = count_instructions(url, f"{namespace}-counted")
    helps = {
        " ".join(("shim", *argv)): [time_command(*argv) for _ in range(args.runs)]
        for argv in (("--help",), ("worker", "--help"))
    }
    ready = [wall for wall, _, _ in starts]
    cpu = [used for _, used, _ in starts if used is not None]
    worker_costs = import_costs(parse_importtime(traced), args.top)
    help_costs = import_costs(help_import_rows(), args.top)
    median, fastest = statistics.median(ready), min(ready)
    print(f"shim worker ready: median {median * 1000:.0f} ms, min {fastest * 1000:.0f} ms")
    print("  runs: " + ", ".join(f"{s * 1000:.0f}" for s in ready) + " ms")
    if cpu:
        cpu_median = statistics.median(cpu) * 1000
        print(f"  CPU time used by then: median {cpu_median:.0f} ms, min {min(cpu) * 1000:.0f} ms")
    huey = [wall for wall, _, _ in hueys]
    if huey:
        print(
            f"huey consumer ready: median {statistics.median(huey) * 1000:.0f} ms, "
            f"min {min(huey) * 1000:.0f} ms; SHIM / huey: {median / statistics.median(huey):.2f}"
        )
        print("  runs: " + ", ".join(f"{s * 1000:.0f}" for s in huey) + " ms")
    for command, runs in helps.items():
        walls, cpus = [w * 1000 for w, _ in runs], [c * 1000 for _, c in runs]
        print(
            f"{command}: median {statistics.median(walls):.0f} ms (min {min(walls):.0f}), "
            f"CPU median {statistics.median(cpus):.0f} ms"
        )
    for what, count in counted.items():
        print(f"instructions, {what}: {count / 1e6:,.1f} M")
    _print_costs("imports of a worker start (-X importtime)", worker_costs)
    _print_costs("imports of `shim worker --help`", help_costs)
    if args.json:
        figures = {
            "runs": args.runs,
            "ready_s": ready,
            "median_s": median,
            "min_s": fastest,
            "cpu_s": cpu,
            "worker_imports": worker_costs,
            "help_imports": help_costs,
            "help_s": {command: [wall for wall, _ in runs] for command, runs in helps.items()},
            "instructions": counted,
            "huey_ready_s": huey,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
