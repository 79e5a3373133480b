"""What ``shim clean`` removes, so that a namespace used for months stays the size of its work.

Past the retention period (``SHIM_RETENTION_MS``, default a week): finished tasks with their logs
and checkpoints, records of crashed and offline workers, and run records none of whose tasks is
left. At any age: checkpoint session sets, logs and checkpoint lists whose tasks are gone (left
by a task removed while a worker still wrote to it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs

from shim_core.connection import redis_errors
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.serde import server_ms

#: Keys checked per round trip.
CHUNK = 500


@attrs.frozen
class CleanReport:
    """How many of each kind of record one clean removed."""

    tasks: int = 0
    workers: int = 0
    runs: int = 0
    sessions: int = 0
    orphans: int = 0

    def __str__(self) -> str:
        return (
            f"removed {self.tasks} finished task(s), {self.workers} crashed or offline "
            f"worker record(s), {self.runs} run record(s), {self.sessions} checkpoint session "
            f"set(s) and {self.orphans} orphaned log or checkpoint list(s)"
        )


class Retention:
    """Removes what a namespace no longer needs (see the module documentation)."""

    def __init__(self, queue: TaskQueue, registry: WorkerRegistry) -> None:
        self.queue = queue
        self.registry = registry
        self.client: Any = queue.client
        self.keys = queue.keys
        self._url = queue._url

    def clean(self, grace_ms: int | None = None) -> CleanReport:
        """Remove everything past ``grace_ms`` (default: the retention setting) and every
        leftover; returns the counts."""
        grace = self.queue.settings.retention_ms if grace_ms is None else grace_ms
        return CleanReport(
            tasks=self.queue.clean(grace),
            workers=self.registry.cleanup_stale_workers(grace),
            runs=self.clean_runs(grace),
            sessions=self.clean_sessions(),
            orphans=self.clean_orphans(),
        )

    @redis_errors
    def clean_runs(self, grace_ms: int) -> int:
        """Run records created more than ``grace_ms`` ago whose tasks are all gone."""
        cutoff = server_ms(self.client) - grace_ms
        old = list(self.client.zrangebyscore(self.keys.runs, "-inf", cutoff))
        removed = 0
        for chunk in _chunks(old):
            pipe = self.client.pipeline(transaction=False)
            for run_id in chunk:
                pipe.hget(self.keys.run(run_id), "task_ids")
            replies = pipe.execute()
            task_ids = {run_id: _ids(ids) for run_id, ids in zip(chunk, replies, strict=True)}
            # One existence check for the tasks of the whole chunk, not a round trip per run.
            every = sorted({t for ids in task_ids.values() for t in ids})
            alive = {t for t, there in zip(every, self._exist(every), strict=True) if there}
            done = [run_id for run_id, ids in task_ids.items() if alive.isdisjoint(ids)]
            if done:
                pipe = self.client.pipeline(transaction=False)
                pipe.delete(*(self.keys.run(r) for r in done))
                pipe.zrem(self.keys.runs, *done)
                pipe.execute()
                removed += len(done)
        return removed

    @redis_errors
    def clean_sessions(self) -> int:
        """Drop from each checkpoint session set the tasks that are gone; returns how many sets
        that emptied (Redis deletes an empty set)."""
        emptied = 0
        for key in self._scan("ckpt-session:*"):
            members = list(self.client.smembers(key))
            gone = [t for t, there in zip(members, self._exist(members), strict=True) if not there]
            if gone:
                self.client.srem(key, *gone)
                emptied += len(gone) == len(members)
        return emptied

    @redis_errors
    def clean_orphans(self) -> int:
        """Delete logs and checkpoint lists of tasks that are gone."""
        removed = 0
        for kind in ("log:", "ckpt:"):
            start = len(self.keys.prefix) + len(kind)
            for chunk in _chunks(list(self._scan(kind + "*"))):
                there = self._exist([key[start:] for key in chunk])
                orphans = [key for key, ok in zip(chunk, there, strict=True) if not ok]
                if orphans:
                    removed += int(self.client.delete(*orphans))
        return removed

    def _exist(self, task_ids: list[str]) -> list[bool]:
        found: list[bool] = []
        for chunk in _chunks(task_ids):
            pipe = self.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.exists(self.keys.task(task_id))
            found += [bool(n) for n in pipe.execute()]
        return found

    def _scan(self, pattern: str) -> Iterator[str]:
        yield from self.client.scan_iter(match=self.keys.pattern(pattern), count=1000)


def _ids(raw: str | None) -> list[str]:
    """The ``task_ids`` field of a run record (untrusted JSON): anything malformed is none."""
    try:
        found = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(i) for i in found] if isinstance(found, list) else []


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]
