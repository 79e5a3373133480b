"""A real ``shim worker`` process for the benchmarks, started the way a user starts one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_shim_worker(url: str, namespace: str, *options: str) -> subprocess.Popen[bytes]:
    """``python -m shim_core.cli worker --redis URL --namespace NS --allow python OPTIONS...``
    with this checkout first on the path (the task bodies live in ``perf``), no input (a worker
    run under a counting server must not hold the terminal), output discarded."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "shim_core.cli", "worker", "--redis", url,
         "--namespace", namespace, "--allow", "python", *options],
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
