"""The task body every system runs, and the record it leaves for ``peers.py``.

The body increments an in-process counter and returns it. To let the harness know when a drain
is over and how late a task started, it also appends one 16-byte record per task to a file of
its worker, ``$SHIM_PEERS_STATS/<worker>.rec``: the wall-clock time the body ran and, for a
latency sample, ``time.time() - sent`` (else NaN). ``$SHIM_PEERS_WORKER`` names the worker
launch; its threads and child processes share the file and append whole records. That is one
``write`` system call per task and no Redis command, the same for every system (the Node.js body
does the same write).
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import time

RECORD = struct.Struct("<dd")
_count = itertools.count(1)
_fd: list[int] = []


def _open() -> int:
    folder = os.environ["SHIM_PEERS_STATS"]
    name = os.environ.get("SHIM_PEERS_WORKER") or str(os.getpid())
    path = os.path.join(folder, f"{name}.rec")
    _fd.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    return _fd[0]


def bump(sent: float | None = None) -> int:
    """Count one task; ``sent`` is the producer's ``time.time()`` for a latency sample."""
    now = time.time()
    n = next(_count)
    fd = _fd[0] if _fd else _open()
    os.write(fd, RECORD.pack(now, now - sent if sent else math.nan))
    return n
