"""Running an agent CLI: its own process group that dies with the worker, output read line by
line, and the three ways SHIM ends it early (cancel, timeout, silence)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

from shim_core.contracts import ExecutionContext
from shim_plugins.executors._process import start_in_group, terminate_group

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes the child get SIGKILL when the worker dies (Linux), so a
    SIGKILLed worker never leaves its agent editing a branch another worker now owns."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: a worker that runs no agent task does not load it
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the signal was armed
            os._exit(1)

    return hook


def agent_environment(defaults: Mapping[str, str]) -> dict[str, str]:
    """What an agent CLI inherits: the adapter's defaults, then the worker's environment, less
    SHIM's own settings (an agent has no business with the fleet's Redis URL and credentials)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    return {**defaults, **inherited}


@attrs.frozen
class Ended:
    """How the CLI ended: its exit code and ``how`` SHIM ended it (``cancelled``, ``timeout``,
    ``idle``), or ``""`` when it exited by itself."""

    exit_code: int
    how: str = ""


@attrs.define
class AgentProcess:
    """Runs one CLI to its end, feeding every output line to ``on_line``."""

    ctx: ExecutionContext
    on_line: Callable[[str], None]
    idle_timeout: float | None = None
    kill_grace: float = 2.0
    poll_interval: float = 0.1
    _last_output: float = attrs.field(factory=time.monotonic, init=False)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float | None,
    ) -> Ended:
        """Start ``argv`` and wait; raises OSError if it cannot start."""
        proc = start_in_group(argv, cwd=cwd, env=env, preexec_fn=_parent_death_signal())
        assert proc.stdout is not None  # stdout=PIPE
        self._last_output = time.monotonic()
        reader = threading.Thread(
            target=self._read, args=(proc,), name=f"agent-output-{self.ctx.task.id}", daemon=True
        )
        reader.start()
        how = self._wait(proc, timeout)
        terminate_group(proc, self.kill_grace)
        reader.join(self.kill_grace)
        return Ended(proc.returncode, how)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                self._last_output = time.monotonic()
                try:
                    self.on_line(raw.rstrip("\r\n"))
                except Exception as exc:  # a parser bug must not stop reading the stream
                    self.ctx.log.warning("output line not handled: %s: %s", type(exc).__name__, exc)

    def _wait(self, proc: subprocess.Popen[str], timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.ctx.cancelled.is_set():
                return "cancelled"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "timeout"
            if self.idle_timeout is not None and now - self._last_output >= self.idle_timeout:
                return "idle"
            try:
                proc.wait(timeout=self.poll_interval)
            except subprocess.TimeoutExpired:
                continue
            return ""
