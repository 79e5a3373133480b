"""The floor under the scalability benchmark: what the machine charges any Redis queue.

``workers`` bare processes share one Redis list of ``tasks`` items. Each pops an item (one round
trip), sleeps ``duration`` and pops the next, and records when its list ran dry. That is the
least a worker can do per task (nothing recorded, nothing leased, no crash safety), so its
overhead over ``tasks x duration / workers`` is the machine's share of SHIM's figure: the
sleep's own overshoot and a round trip to a Redis woken from idle, for processes that share the
cores. Start-up is not timed: the processes wait on a start signal (BLPOP) first.

Run as a worker: ``python _floor.py URL LIST GO ENDS DURATION``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

_HERE = Path(__file__).resolve()


def floor_run(url: str, *, workers: int, tasks: int, duration: float) -> float:
    """Wall seconds for ``workers`` bare processes to pop and sleep through ``tasks`` items."""
    client = redis.Redis.from_url(url)
    tag = f"shim-floor:{uuid.uuid4().hex}"
    items, go, ends = f"{tag}:items", f"{tag}:go", f"{tag}:ends"
    argv = [sys.executable, str(_HERE), url, items, go, ends, repr(duration)]
    procs = [subprocess.Popen(argv) for _ in range(workers)]
    try:
        client.rpush(items, *range(tasks))
        while client.llen(f"{go}:ready") < workers:  # every process connected and waiting
            _check(procs)
            time.sleep(0.01)
        start = time.time()
        client.rpush(go, *range(workers))
        finished = []
        while len(finished) < workers:
            popped = client.blpop([ends], timeout=1)
            if popped is None:
                _check(procs)
                continue
            finished.append(float(popped[1]))
        return max(finished) - start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        client.delete(items, go, ends, f"{go}:ready")
        client.close()


def _check(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a floor process exited with {proc.returncode}")


def _work(url: str, items: str, go: str, ends: str, duration: float) -> None:
    client = redis.Redis.from_url(url)
    client.rpush(f"{go}:ready", 1)
    client.blpop([go], timeout=60)
    item = client.lpop(items)
    while item is not None:
        time.sleep(duration)
        item = client.lpop(items)
    client.rpush(ends, repr(time.time()))


if __name__ == "__main__":
    _work(*sys.argv[1:5], float(sys.argv[5]))
