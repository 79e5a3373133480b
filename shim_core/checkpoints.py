"""CheckpointStore: saves and finds checkpoints through the configured backend, fenced by lease.

A checkpoint is accepted only from the current holder of the task's lease, so a worker presumed
dead cannot overwrite the state its successor resumes from. A backend with ``save_leased(checkpoint,
token)`` (the redis one) checks the lease atomically with the write.
"""

from __future__ import annotations

import time
from typing import Any

from shim_core.contracts import Checkpoint, CheckpointBackend
from shim_core.errors import StaleLease, ValidationError
from shim_core.models import new_id
from shim_core.queue import TaskQueue
from shim_core.serde import compact_json


class CheckpointStore:
    """Facade over one :class:`~shim_core.contracts.CheckpointBackend`."""

    def __init__(self, backend: CheckpointBackend, queue: TaskQueue) -> None:
        self.backend = backend
        self.queue = queue
        self._url = queue._url

    def save(
        self,
        task_id: str,
        token: int,
        state: dict[str, Any],
        *,
        progress: float = 0.0,
        attempt: int = 0,
        session_id: str = "",
    ) -> str:
        """Save a checkpoint for ``task_id`` if ``token`` is its current lease; returns its id.

        Raises StaleLease / InvalidTransition / TaskNotFound like every fenced call, and
        ValidationError for a state over the payload limit (``SHIM_MAX_PAYLOAD_BYTES``).
        """
        size = len(compact_json(state))
        limit = self.queue.settings.max_payload_bytes
        if size > limit:
            raise ValidationError(
                f"checkpoint of task {task_id!r} is {size} bytes, over the {limit}-byte limit "
                "(SHIM_MAX_PAYLOAD_BYTES)"
            )
        checkpoint = Checkpoint(
            id=new_id(),
            task_id=task_id,
            session_id=session_id,
            attempt=attempt,
            progress=progress,
            state=state,
            created_at_ms=int(time.time() * 1000),
        )
        fenced = getattr(self.backend, "save_leased", None)
        if fenced is not None:  # the backend checks the lease atomically with the write
            saved = fenced(checkpoint, token)
            if saved is None:
                self.check_lease(task_id, token)  # raises the precise error
                raise StaleLease(task_id, token)  # the lease changed in between
            return str(saved)
        # Other backends: check, then write (a worker frozen between the two could still write;
        # the redis backend has no such window).
        self.check_lease(task_id, token)
        return self.backend.save(checkpoint)

    def check_lease(self, task_id: str, token: int) -> None:
        """Raise unless ``token`` is the current lease of an active task."""
        self.queue.check_lease(task_id, token)

    def latest(self, task_id: str) -> Checkpoint | None:
        return self.backend.latest(task_id)

    def for_session(self, session_id: str) -> list[Checkpoint]:
        return self.backend.for_session(session_id)

    def delete(self, task_id: str) -> int:
        return self.backend.delete(task_id)
