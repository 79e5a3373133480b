"""TaskClaimer: the worker side of claiming (seed component 8)."""

from __future__ import annotations

import threading

from shim_core.models import Claim, WorkerCapabilities
from shim_core.queue import TaskQueue


class TaskClaimer:
    """Claims tasks of the worker's supported types, plus tasks assigned to the worker.

    Blocking claims sleep in Redis (BZPOPMIN on wake markers): no polling loop.
    """

    def __init__(
        self,
        queue: TaskQueue,
        worker_id: str,
        capabilities: WorkerCapabilities,
        *,
        lease_ms: int | None = None,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.capabilities = capabilities
        self.lease_ms = lease_ms
        self._active = threading.Event()
        self._count = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._active.set()

    def stop(self) -> None:
        """Stop claiming; a blocked claim returns at its next wake-up or timeout."""
        self._active.clear()

    def is_active(self) -> bool:
        return self._active.is_set()

    def get_claim_count(self) -> int:
        return self._count

    def count_claims(self, n: int) -> None:
        """Count claims made elsewhere for this worker (chained onto a completion)."""
        with self._lock:
            self._count += n

    def claim_next(self, block: float | None = None) -> Claim | None:
        """One task, or None (at once, or after ``block`` seconds without work)."""
        claims = self.claim_batch(1, block=block)
        return claims[0] if claims else None

    def claim_batch(self, count: int, block: float | None = None) -> list[Claim]:
        """Up to ``count`` tasks in one round trip."""
        if not self.is_active():
            return []
        claims = self.queue.claim(
            self.capabilities.supported_task_types,
            worker_id=self.worker_id,
            count=count,
            lease_ms=self.lease_ms,
            block=block,
        )
        with self._lock:
            self._count += len(claims)
        return claims
