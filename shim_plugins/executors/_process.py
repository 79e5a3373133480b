"""Running a command in its own process group: output to the task log, progress directives,
timeout and cancellation that take the whole group down."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import attrs

from shim_core.contracts import ExecutionContext

#: ``::progress 0.4 some message`` on the output reports progress instead of being logged.
PROGRESS = re.compile(r"::progress\s+(?P<fraction>\S+)(?:\s+(?P<message>.*))?")


@attrs.frozen
class Outcome:
    """How a command ended."""

    exit_code: int
    tail: list[str]
    timed_out: bool = False
    cancelled: bool = False


class OutputReader(threading.Thread):
    """Reads the command's output line by line: logs it, keeps its tail, reports progress."""

    def __init__(self, stream: IO[str], ctx: ExecutionContext, tail_lines: int) -> None:
        super().__init__(name=f"shell-output-{ctx.task.id}", daemon=True)
        self.stream = stream
        self.ctx = ctx
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                line = raw.rstrip("\r\n")
                if not self._progress(line):
                    self.tail.append(line)
                    self.ctx.log.info("%s", line)

    def _progress(self, line: str) -> bool:
        match = PROGRESS.fullmatch(line.strip())
        if not match:
            return False
        try:
            fraction = float(match["fraction"])
        except ValueError:
            return False
        if not math.isfinite(fraction):
            return False
        try:
            self.ctx.progress(min(max(fraction, 0.0), 1.0), match["message"] or "")
        except Exception as exc:  # a lost lease surfaces through ctx.cancelled; keep reading
            self.ctx.log.warning("progress report failed: %s: %s", type(exc).__name__, exc)
        return True


def start_in_group(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str],
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """Start ``argv`` in a session (process group) of its own, stdin closed, stdout and stderr
    merged into one line-buffered text pipe; raises OSError if it cannot start."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 (only ever one prctl: async-signal-safe)
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )


def _group_alive(pgid: int) -> bool:
    """True while a process of the group still runs. Zombies do not count: in a container whose
    init never reaps orphans, a killed grandchild stays a zombie for good."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the id now belongs to someone else
        return False
    if not os.path.isdir("/proc"):
        return True
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _running_member(entry.path, pgid):
                return True
    return False


def _running_member(proc_dir: str, pgid: int) -> bool:
    try:
        with open(os.path.join(proc_dir, "stat"), encoding="utf-8") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces and ")"
    except (OSError, IndexError):
        return False
    return len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X")


def terminate_group(proc: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM the command's process group, SIGKILL whatever is left after ``grace`` seconds,
    and reap the command."""
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@attrs.define
class Supervisor:
    """Runs one command to its end, its timeout or its cancellation."""

    ctx: ExecutionContext
    kill_grace: float = 2.0
    poll_interval: float = 0.1
    tail_lines: int = 20

    def run(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float | None
    ) -> Outcome:
        """Start ``argv`` in a new session and wait; raises OSError if it cannot start."""
        proc = start_in_group(argv, cwd=cwd, env=env)
        assert proc.stdout is not None  # stdout=PIPE
        reader = OutputReader(proc.stdout, self.ctx, self.tail_lines)
        reader.start()
        reason = self._wait(proc, timeout)
        # Whatever is left of the group (killed command, or background jobs of a finished one)
        # must not outlive the task.
        terminate_group(proc, self.kill_grace)
        reader.join(self.kill_grace)
        if reader.is_alive():  # a process that left the group still holds the output open
            self.ctx.log.warning("output still open after the command ended; tail may be short")
        return Outcome(
            exit_code=proc.returncode,
            tail=list(reader.tail),
            timed_out=reason == "timeout",
            cancelled=reason == "cancelled",
        )

    def _wait(self, proc: subprocess.Popen[str], timeout: float | None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.ctx.cancelled.is_set():
                return "cancelled"
            slice_ = self.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout"
                slice_ = min(slice_, left)
            try:
                proc.wait(timeout=slice_)
            except subprocess.TimeoutExpired:
                continue
            return None
