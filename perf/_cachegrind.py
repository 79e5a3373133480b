"""Instructions a command executes, counted by valgrind's cachegrind: a figure that hardly moves
between runs on a shared machine, unlike its time. Used by ``worker_startup.py --instructions``
and ``client_cost.py``."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence

_INSTRUCTIONS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(command: Sequence[str], env: Mapping[str, str], timeout: float = 600) -> int:
    """Instructions executed by ``command`` (its output discarded); RuntimeError if it fails."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         *command],
        env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    found = _INSTRUCTIONS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{command[0]}: the counted process failed:\n{done.stderr[-2000:]}")
    return int(found[1].replace(",", ""))
