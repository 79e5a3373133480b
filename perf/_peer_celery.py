"""Celery app for ``peers.py``: loaded by a ``celery worker`` subprocess and by the producer.

Configured from the environment that ``peers.py`` sets: ``SHIM_PERF_REDIS_URL`` (broker),
``SHIM_PERF_MILESTONES`` (comma-separated task counts), ``SHIM_PERF_READY_KEY`` and
``SHIM_PERF_DONE_KEY`` (lists the worker pushes to when it is consuming, and each time the number
of tasks it has run reaches a milestone). No
result backend: results are ignored, as a no-op benchmark needs none.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, worker_ready

URL = os.environ.get("SHIM_PERF_REDIS_URL", "redis://127.0.0.1:6379/0")
MILESTONES = frozenset(
    int(m) for m in os.environ.get("SHIM_PERF_MILESTONES", "").split(",") if m.strip()
)
READY_KEY = os.environ.get("SHIM_PERF_READY_KEY", "perf:celery:ready")
DONE_KEY = os.environ.get("SHIM_PERF_DONE_KEY", "perf:celery:done")

app = Celery("shim_perf", broker=URL)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
)

_state = {"done": 0}
_client: list[redis.Redis] = []


def _redis() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(URL))
    return _client[0]


@app.task(name="shim_perf.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    return None


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(**_: Any) -> None:
    _redis().lpush(READY_KEY, "1")


@task_postrun.connect  # type: ignore[untyped-decorator]
def _count(**_: Any) -> None:
    _state["done"] += 1
    if _state["done"] in MILESTONES:
        _redis().lpush(DONE_KEY, str(_state["done"]))
