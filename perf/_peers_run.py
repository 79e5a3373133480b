"""One measurement of one system: its worker processes, its producer, and the three figures.

A *phase* starts W worker processes (each in a process group of its own), waits until every one
of them has run a warm-up task, and then:

1. (one-worker phase only) sends latency samples at a fixed pace, each carrying its send time;
2. freezes the workers (SIGSTOP to each process group), enqueues N tasks one call per task with
   the producer (timed: the enqueue figure), unfreezes them (SIGCONT) and times the drain from
   the SIGCONT to the last task body's own clock reading.

Freezing idle, ready workers makes the start of the drain the same instant for every system
whatever its way of receiving work (blocking pop, stream read or polling), without touching its
data structures, and keeps start-up time out of the figure.

The harness learns what ran from the records the task bodies append to files in a folder of the
phase (``perf/peer_drivers/_body.py``), not from Redis.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis
from _peers_systems import DRIVERS, QUEUE, System
from peers_setup import node_modules

from shim_core.keys import Keys

RECORD = struct.Struct("<dd")
_POLL_S = 0.01
_SETTLE_S = 0.1


class RunFailed(Exception):
    """This system's run did not complete; the message says why."""


class Deadline:
    """The time limit of one system run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; raises RunFailed once none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise RunFailed(f"timed out after {self.seconds:g} s")
        return left


def _tail(path: Path, chars: int = 300) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-chars:] if lines else "(empty log)"


class Process:
    """A child in a process group of its own, with its output in a log file."""

    def __init__(
        self, what: str, argv: Sequence[str], env: dict[str, str], log: Path, pipes: bool = False
    ) -> None:
        self.what = what
        self.log = log
        self._log: IO[bytes] = log.open("wb")
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=DRIVERS,
                env=env,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else self._log,
                stderr=self._log,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise RunFailed(f"cannot start {what}: {exc}") from exc

    def check(self) -> None:
        """Raise RunFailed if the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise RunFailed(f"{self.what} exited with {code}: {_tail(self.log)}")

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group (worker pools, forked children), while its
        leader is not reaped: once it is, its id may belong to another session on a busy
        machine (a test suite starts thousands of processes; pid_max is often 32768)."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait_stopped(self, timeout: float = 2.0) -> None:
        """Wait until SIGSTOP has stopped every thread of the group: ``killpg`` returns before
        the threads have stopped, and on a loaded machine one that was running could still
        claim a task the producer enqueues right after (one drain came up a task short so:
        SHIM had run all of them, one before the count it was measured from). Linux only."""
        deadline = time.monotonic() + timeout
        while self.proc.returncode is None and not _group_stopped(self.proc.pid):
            if time.monotonic() > deadline:
                raise RunFailed(f"{self.what} did not stop within {timeout:g} s of SIGSTOP")
            time.sleep(0.001)

    def stop(self, grace: float = 5.0) -> None:
        """SIGCONT + SIGTERM to the group, SIGKILL after ``grace`` seconds."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        self.signal(signal.SIGKILL)  # also any child the leader left behind
        if self.proc.poll() is None:
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


class Producer(Process):
    """The system's producer, answering one JSON line per command (see produce.py)."""

    def __init__(self, system: System, env: dict[str, str], log: Path) -> None:
        super().__init__("producer", system.producer(), env, log, pipes=True)
        self._buffer = b""

    def request(self, command: str, deadline: Deadline) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            self.check()
            raise RunFailed(f"producer closed its input: {_tail(self.log)}") from None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], min(deadline.left(), 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.check()
                    raise RunFailed(f"producer closed its output: {_tail(self.log)}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RunFailed(f"producer: {answer['error']}")
        return answer

    def stop(self, grace: float = 5.0) -> None:
        """Ask it to quit first (it closes its connections), then stop the group."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.flush()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        super().stop(grace)


class Records:
    """The 16-byte records the task bodies of one phase append to ``<folder>/<worker>.rec``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def sizes(self) -> dict[str, int]:
        """Bytes per record file now."""
        return {p.name: p.stat().st_size for p in self.folder.glob("*.rec")}

    def count(self, since: dict[str, int] | None = None) -> int:
        """Whole records written (after ``since``, a :meth:`sizes` snapshot)."""
        since = since or {}
        return sum((n - since.get(f, 0)) // RECORD.size for f, n in self.sizes().items())

    def read(self, since: dict[str, int]) -> list[tuple[float, float]]:
        """(time, latency or NaN) of every record written after ``since``."""
        out: list[tuple[float, float]] = []
        for path in self.folder.glob("*.rec"):
            data = path.read_bytes()[since.get(path.name, 0) :]
            whole = len(data) - len(data) % RECORD.size
            out.extend(RECORD.iter_unpack(data[:whole]))
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 100]."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


#: /proc states of a thread that runs no code: stopped, traced, zombie (a child not reaped yet),
#: dead.
_NOT_RUNNING = ("T", "t", "Z", "X")


def _group_stopped(pgid: int) -> bool:
    """Whether every thread of every process in process group ``pgid`` is stopped (state T in
    /proc; True where there is no /proc to ask)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/task/[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the thread or process ended meanwhile
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in _NOT_RUNNING:
            return False
    return True


class Phase:
    """W worker processes of one system and its producer, all stopped on exit."""

    def __init__(
        self, system: System, url: str, workers: int, folder: Path, deadline: Deadline
    ) -> None:
        self.system, self.url, self.deadline = system, url, deadline
        self.names = [f"w{i}" for i in range(workers)]
        folder.mkdir(parents=True)
        self.records = Records(folder)
        self.folder = folder
        self.workers: list[Process] = []
        self.producer: Producer | None = None

    def env(self, name: str) -> dict[str, str]:
        """The environment of one of its processes (no PYTHONPATH / venv of the harness)."""
        drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NODE_PATH"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            SHIM_PEERS_URL=self.url,
            SHIM_PEERS_QUEUE=QUEUE,
            SHIM_PEERS_STATS=str(self.folder),
            SHIM_PEERS_WORKER=name,
            SHIM_PEERS_CONCURRENCY=str(self.system.concurrency),
            PYTHONPATH=self.system.pythonpath(),
            NODE_PATH=str(node_modules()),
        )
        return env

    def __enter__(self) -> Phase:
        try:
            for name in self.names:
                argv = self.system.worker(self.url, name)
                log = self.folder / f"{name}.log"
                self.workers.append(Process(f"worker {name}", argv, self.env(name), log))
            self.producer = Producer(self.system, self.env("producer"), self.folder / "prod.log")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process of the phase (workers first, then the producer)."""
        for proc in self.workers:
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGTERM)
        for proc in [*self.workers, *filter(None, [self.producer])]:
            proc.stop()

    def check(self) -> None:
        """Raise RunFailed if a worker exited."""
        for proc in self.workers:
            proc.check()

    def request(self, command: str) -> dict[str, Any]:
        """One producer command."""
        assert self.producer is not None
        return self.producer.request(command, self.deadline)

    def wait_for(
        self, total: int, cap: float | None = None, since: dict[str, int] | None = None
    ) -> bool:
        """Wait until the task bodies have written ``total`` records in this phase (after
        ``since``, a :meth:`Records.sizes` snapshot), or at most ``cap`` seconds (then False)."""
        until = None if cap is None else time.monotonic() + cap
        while self.records.count(since) < total:
            self.check()
            self.deadline.left()
            if until is not None and time.monotonic() > until:
                return False
            time.sleep(_POLL_S)
        return True

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every worker's process group."""
        for proc in self.workers:
            proc.signal(sig)

    def freeze(self) -> None:
        """SIGSTOP every worker, and wait until each has stopped."""
        self.signal(signal.SIGSTOP)
        for proc in self.workers:
            proc.wait_stopped()


def run_phase(
    phase: Phase, tasks: int, *, samples: int, interval: float, batch: bool, cap: float
) -> dict[str, Any]:
    """Warm up, optionally take latency samples, then enqueue and drain ``tasks``.

    A drain still running after ``cap`` seconds is cut short: its rate is then the tasks run
    by that time over the time they took (``drain_ran`` < ``tasks``)."""
    cells: dict[str, Any] = {"versions": phase.request("hello")}
    done = phase.request("warmup " + ",".join(phase.names))["sent"]
    phase.wait_for(done)
    if samples:
        before = phase.records.sizes()
        phase.request(f"latency {samples} {interval}")
        phase.wait_for(samples, since=before)
        lat = [lat for _, lat in phase.records.read(before) if not math.isnan(lat)]
        cells["p50_ms"] = percentile(lat, 50) * 1000
        cells["p99_ms"] = percentile(lat, 99) * 1000
        done += samples
    time.sleep(_SETTLE_S)  # let the last acknowledgements go out
    cells["repeated"] = phase.records.count() - done  # runs beyond one per task sent
    phase.freeze()
    try:
        if batch:
            cells["batch_s"] = phase.request(f"batch {tasks}")["seconds"]
        else:
            cells["enqueue_s"] = phase.request(f"enqueue {tasks}")["seconds"]
        before = phase.records.sizes()
        started = time.time()
    finally:
        phase.signal(signal.SIGCONT)
    # Counted from the snapshot: a warm-up task run twice (delivery is at least once) must not
    # end the wait one task early.
    phase.wait_for(tasks, cap, since=before)
    ran = [t for t, _ in phase.records.read(before)]
    if not ran:
        raise RunFailed(f"no task ran within the {cap:g} s drain cap")
    cells["drain_per_s"] = len(ran) / (max(ran) - started)
    cells["drain_ran"] = len(ran)
    if len(ran) < tasks and phase.system.key.startswith("shim"):
        cells["short_drain"] = shim_state(phase.url)
    if batch and phase.system.mapped:
        # Timed with the workers frozen, as the batch above; nobody waits for these tasks to
        # run (the phase's end stops the workers and the next flush removes what is left).
        phase.freeze()
        try:
            cells["map_s"] = phase.request(f"map {tasks}")["seconds"]
        finally:
            phase.signal(signal.SIGCONT)
    return cells


def shim_state(url: str) -> dict[str, Any]:
    """Where SHIM's tasks are when a drain came up short (its counts, how many tasks are not
    complete and the first 20 of them): whether a task was left pending, held, or ran and was
    not recorded."""
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys(QUEUE)
    try:
        counts = client.hgetall(keys.counts)
        found = list(client.scan_iter(match=keys.task_pattern(), count=1000))
        pipe = client.pipeline(transaction=False)
        for key in found:
            pipe.hmget(key, "status", "attempts", "worker_id", "claimed_at", "seq")
        unfinished = {
            key.removeprefix(keys.prefix): fields
            for key, fields in zip(found, pipe.execute(), strict=True)
            if fields[0] != "complete"
        }
        first = dict(sorted(unfinished.items(), key=lambda item: int(item[1][4] or 0))[:20])
        return {"counts": counts, "unfinished": len(unfinished), "first_unfinished": first}
    finally:
        client.close()


def flush(url: str) -> None:
    """FLUSHDB on the shared server."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def measure(
    system: System,
    url: str,
    folder: Path,
    *,
    tasks: int,
    samples: int,
    interval: float,
    timeout: float,
    many: int = 4,
    cap: float = 30.0,
) -> dict[str, Any]:
    """One run of one system: a one-worker phase, then a ``many``-worker phase."""
    deadline = Deadline(timeout)
    flush(url)
    with Phase(system, url, 1, folder / "one", deadline) as phase:
        one = run_phase(phase, tasks, samples=samples, interval=interval, batch=False, cap=cap)
    flush(url)
    with Phase(system, url, many, folder / "many", deadline) as phase:
        more = run_phase(phase, tasks, samples=0, interval=interval, batch=system.batch, cap=cap)
    flush(url)
    cells: dict[str, Any] = {
        "versions": one["versions"],
        "enqueue_per_s": tasks / one["enqueue_s"],
        "drain1_per_s": one["drain_per_s"],
        f"drain{many}_per_s": more["drain_per_s"],
        "drain1_ran": one["drain_ran"],
        f"drain{many}_ran": more["drain_ran"],
        "repeated": one["repeated"] + more["repeated"],
        "p50_ms": one["p50_ms"],
        "p99_ms": one["p99_ms"],
    }
    if "batch_s" in more:
        cells["batch_per_s"] = tasks / more["batch_s"]
    if "map_s" in more:
        cells["map_per_s"] = tasks / more["map_s"]
    for name, phase in (("drain1", one), ("drainN", more)):
        if "short_drain" in phase:
            cells[f"{name}_short"] = phase["short_drain"]
    return cells
