"""The producer of ``peers.py``: one long-lived process per system, driven over stdin / stdout.

Run as ``python produce.py <app>`` with the peer's interpreter, where ``<app>`` is a module of
this folder (``huey_app``, ``arq_app``, ...) that defines ``PACKAGE`` and either
``producer() -> (send, close)`` (plain functions) or ``async aproducer() -> (send, close)``
(coroutine functions). ``send(sent)`` enqueues one task with one library call; ``sent`` is
``time.time()`` for a latency sample, else None. An app may define ``send_batch(count)`` and
``send_map(count)`` too.

Commands, one per line; each answers one JSON line:

* ``hello`` -> the versions of the package, redis-py and hiredis.
* ``warmup ID,ID,..`` -> send a few tasks every 0.2 s until every listed worker has run one
  (its file ``$SHIM_PEERS_STATS/<ID>.rec`` exists); answers how many tasks it sent.
* ``enqueue N`` -> N tasks, one call each, back to back; answers the seconds it took.
* ``batch N`` -> N tasks through ``send_batch``; answers the seconds it took.
* ``map N`` -> N tasks through ``send_map``; answers the seconds it took.
* ``latency N INTERVAL`` -> N samples, one every INTERVAL seconds (open loop, on a fixed
  schedule that does not wait for the previous task).
* ``quit``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

Send = Callable[[float | None], Any]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def serve(app: Any) -> None:
    """Answer commands from stdin until ``quit`` or end of input."""
    if hasattr(app, "aproducer"):
        send, close = await app.aproducer()
    else:
        send, close = app.producer()
    stats = os.environ["SHIM_PEERS_STATS"]
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        answer: dict[str, Any]
        if words[0] == "hello":
            answer = {
                "version": _version(app.PACKAGE),
                "redis": _version("redis"),
                "hiredis": _version("hiredis"),
            }
        elif words[0] == "warmup":
            wanted = words[1].split(",")
            sent = 0
            while not all(os.path.exists(os.path.join(stats, f"{w}.rec")) for w in wanted):
                for _ in range(len(wanted)):
                    await _maybe(send(None))
                    sent += 1
                await asyncio.sleep(0.2)
            answer = {"sent": sent}
        elif words[0] in ("enqueue", "batch", "map"):
            count = int(words[1])
            started = time.perf_counter()
            if words[0] == "batch":
                await _maybe(app.send_batch(count))
            elif words[0] == "map":
                await _maybe(app.send_map(count))
            else:
                for _ in range(count):
                    await _maybe(send(None))
            answer = {"seconds": time.perf_counter() - started}
        elif words[0] == "latency":
            count, interval = int(words[1]), float(words[2])
            start = time.perf_counter() + interval
            for i in range(count):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _maybe(send(time.time()))
            answer = {"sent": count}
        else:
            answer = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(answer), flush=True)
    await _maybe(close())


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app = importlib.import_module(sys.argv[1])
    asyncio.run(serve(app))


if __name__ == "__main__":
    main()
