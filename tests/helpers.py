"""Small helpers shared by the tests (no fixtures here: those live in pytest_shim)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def server_ms(client: Any) -> int:
    """The Redis server's clock in epoch milliseconds (the clock the scripts decide by)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


#: The repository's perf/ folder (benchmark scripts; CI runs them small).
PERF_DIR = Path(__file__).resolve().parents[1] / "perf"


def run_perf_script(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python <perf script> args...`` from perf/ with this checkout first on the path and
    no SHIM_* connection settings inherited."""
    root = str(PERF_DIR.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=PERF_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_python(code: str, timeout: float = 60) -> str:
    """The stdout of a fresh interpreter running ``code`` (dedented): for what a process loads
    on its own, which this one, having imported everything long ago, cannot show."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
