"""ProgressReporter: the worker's heartbeat, status and statistics (seed component 10).

The heartbeat runs on its own thread, independent of the work, so a long task never looks dead.
One beat is one round trip: it renews the worker's deadline and every lease it holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs

from shim_core.models import WorkerStatus
from shim_core.outage import OutageLog
from shim_core.registry import HeartbeatRefused, WorkerRegistry

log = logging.getLogger(__name__)


@attrs.define
class LocalStats:
    """What this worker process has done (the registry keeps the fleet-wide view)."""

    tasks_completed: int = 0
    tasks_failed: int = 0
    results_fenced: int = 0
    total_duration_ms: int = 0
    heartbeats: int = 0
    heartbeat_errors: int = 0

    @property
    def avg_duration_ms(self) -> float:
        done = self.tasks_completed + self.tasks_failed
        return self.total_duration_ms / done if done else 0.0


class ProgressReporter:
    """Beats every ``heartbeat_interval`` seconds and tracks the leases the worker holds."""

    def __init__(
        self,
        registry: WorkerRegistry,
        worker_id: str,
        heartbeat_interval: float,
        *,
        lease_ms: int | None = None,
        on_lost: Callable[[list[str]], None] = lambda ids: None,
        on_refused: Callable[[HeartbeatRefused], None] = lambda exc: None,
        outage: OutageLog | None = None,
    ) -> None:
        self.registry = registry
        self.outage = outage or OutageLog(log)
        self.worker_id = worker_id
        self.heartbeat_interval = heartbeat_interval
        self.lease_ms = lease_ms
        self.stats = LocalStats()
        self._on_lost = on_lost
        self._on_refused = on_refused
        self._leases: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: When the registry last took a heartbeat (or the worker registered), monotonic s.
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self._stop.clear()
        self.last_beat = time.monotonic()  # the worker has just registered
        self._thread = threading.Thread(
            target=self._loop, name=f"shim-heartbeat-{self.worker_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def send_heartbeat(self) -> list[str]:
        """Beat now; returns the ids of leases found lost (and reports them to ``on_lost``)."""
        with self._lock:
            leases = list(self._leases.items())
        status = WorkerStatus.BUSY if leases else WorkerStatus.IDLE
        try:
            lost = self.registry.record_heartbeat(
                self.worker_id, leases, status=status, lease_ms=self.lease_ms
            )
        except HeartbeatRefused as exc:
            self.stats.heartbeats += 1
            self._on_refused(exc)
            return exc.lost
        self.stats.heartbeats += 1
        self.last_beat = time.monotonic()
        sent = dict(leases)
        with self._lock:  # a lease taken again meanwhile (a new claim of the task) is not lost
            lost = [t for t in lost if self._leases.get(t) == sent.get(t)]
        if lost:
            self._on_lost(lost)
        return lost

    def report_status(self, status: WorkerStatus) -> None:
        self.registry.update_worker_status(self.worker_id, status)

    def report_task_start(self, task_id: str, token: int) -> None:
        """Hold the lease in the heartbeat from now on."""
        with self._lock:
            self._leases[task_id] = token

    def report_task_complete(
        self, task_id: str, duration_ms: int, status: str, *, token: int | None = None
    ) -> None:
        """Drop the lease (only lease ``token`` when given: the task may have been claimed
        again since) and count the outcome (``complete``, ``failed``, ``fenced``, ...)."""
        with self._lock:
            if token is None or self._leases.get(task_id) == token:
                self._leases.pop(task_id, None)
        if status == "complete":
            self.stats.tasks_completed += 1
        elif status in ("failed", "retrying"):
            self.stats.tasks_failed += 1
        elif status == "fenced":
            self.stats.results_fenced += 1
        self.stats.total_duration_ms += duration_ms

    def held_leases(self) -> dict[str, int]:
        with self._lock:
            return dict(self._leases)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                self.send_heartbeat()
                self.outage.succeeded()
            except Exception as exc:  # Redis away (or a socket closed under us): keep beating
                self.stats.heartbeat_errors += 1
                self.outage.failed(f"the heartbeat of {self.worker_id}", exc)
