"""The fleet as views show it (``shim workers``, the dashboard): each worker with the tasks it
holds now, read from the leases so true to the second, its status and heartbeat age; workers that
crashed or left long ago are aged out."""

from __future__ import annotations

import time

import attrs

from shim_core.models import WorkerRegistration, WorkerStatus
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry

#: Crashed or offline workers stay in the views this long after their last heartbeat.
GONE_SHOWN_S = 600
_GONE = frozenset({WorkerStatus.CRASHED, WorkerStatus.OFFLINE})


@attrs.frozen
class WorkerView:
    """One worker as shown: ``status`` is ``busy`` / ``idle`` from its leases, or ``crashed`` /
    ``offline``; ``running`` the task ids it holds; ``age`` seconds since its last heartbeat."""

    worker: WorkerRegistration
    status: str
    running: tuple[str, ...]
    age: float | None

    @property
    def gone(self) -> bool:
        """Whether the worker crashed or left."""
        return self.worker.status in _GONE


@attrs.frozen
class Roster:
    """The workers shown, and how many gone ones were aged out."""

    workers: tuple[WorkerView, ...]
    hidden: int


def roster(queue: TaskQueue, registry: WorkerRegistry, *, show_all: bool = False) -> Roster:
    """The namespace's workers (three round trips); with ``show_all``, gone ones of any age."""
    held: dict[str, list[str]] = {}
    for task_id, worker_id in sorted(queue.holders().items()):
        held.setdefault(worker_id, []).append(task_id)
    now = time.time()
    shown, hidden = [], 0
    for w in registry.all_workers():
        seen = w.heartbeat.last_seen.timestamp() if w.heartbeat.last_seen else None
        gone = w.status in _GONE
        if gone and not show_all and (seen is None or now - seen > GONE_SHOWN_S):
            hidden += 1
            continue
        running = tuple(held.get(w.id, ()))
        status = w.status.value if gone else ("busy" if running else "idle")
        shown.append(WorkerView(w, status, running, None if seen is None else now - seen))
    return Roster(tuple(shown), hidden)
