"""TaskAssigner: push tasks to chosen workers (seed component 6).

SHIM's default is pull: any capable worker claims the next task, which balances load by itself.
The assigner adds push on top, for when a supervisor wants a particular worker: it targets a task
at the least-loaded idle worker that supports its type (the task then waits in that worker's own
queue, ``ready:@<worker>``), or queues it for anyone when no such worker is idle. Tasks targeted
at a worker that crashes or leaves go back to the shared queue by themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs

from shim_core.models import Task, WorkerRegistration, WorkerStatus
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry


@attrs.frozen
class AssignmentResult:
    task_id: str
    status: str  # 'assigned' (targeted at worker_id) or 'queued' (any worker may claim it)
    worker_id: str | None = None
    reason: str = ""


class TaskAssigner:
    def __init__(self, queue: TaskQueue, registry: WorkerRegistry) -> None:
        self.queue = queue
        self.registry = registry

    def assign_task(self, task: Task) -> AssignmentResult:
        return self.assign_batch([task])[0]

    def assign_batch(self, tasks: Sequence[Task]) -> list[AssignmentResult]:
        """Target each task at the least-loaded eligible worker, then add them all in one call."""
        loads = self._loads()
        workers = [
            w
            for w in self.registry.get_active_workers()
            if w.status in (WorkerStatus.IDLE, WorkerStatus.BUSY)
        ]
        placed: list[Task] = []
        results: list[AssignmentResult] = []
        for task in tasks:
            worker = self._pick(task, workers, loads)
            if worker is None:
                placed.append(attrs.evolve(task, assigned_to=None))
                results.append(AssignmentResult(task.id, "queued", reason="no idle capable worker"))
                continue
            loads[worker.id] += 1
            placed.append(attrs.evolve(task, assigned_to=worker.id))
            results.append(AssignmentResult(task.id, "assigned", worker.id))
        self.queue.add_many(placed)
        return results

    def reassign_task(
        self, task_id: str, reason: str, worker_id: str | None = None
    ) -> AssignmentResult:
        """Move a pending or running task to ``worker_id``, or to any worker (voiding a running
        task's lease, so its current worker's result is refused)."""
        self.queue.reassign(task_id, worker_id)
        if worker_id:
            return AssignmentResult(task_id, "assigned", worker_id, reason)
        return AssignmentResult(task_id, "queued", reason=reason)

    def get_task_assignments(self, worker_id: str) -> list[Task]:
        """Tasks the worker runs now, and tasks waiting in its own queue."""
        ids = self.queue.queued_ids(f"@{worker_id}")
        ids += [t for t, w in self.queue.holders().items() if w == worker_id]
        return [t for t in self.queue.get_many(ids) if t is not None]

    def get_unassigned_tasks(self, types: Sequence[str] | None = None) -> list[Task]:
        """Pending tasks in the shared queues (not targeted at a worker)."""
        stats = self.queue.stats()
        ids: list[str] = []
        for task_type in types or sorted(stats.by_type):
            ids += self.queue.queued_ids(task_type)
        return [t for t in self.queue.get_many(ids) if t is not None]

    def get_worker_load(self, worker_id: str) -> int:
        return self._loads()[worker_id]

    def rebalance_tasks(self) -> int:
        """Move tasks waiting in the queue of a worker that is busy past its capacity (or gone)
        to an idle capable worker, or to the shared queue; returns how many moved."""
        loads = self._loads()
        workers = {w.id: w for w in self.registry.all_workers()}
        idle = [w for w in workers.values() if w.status is WorkerStatus.IDLE]
        moved = 0
        for worker_id, worker in workers.items():
            capacity = worker.capabilities.max_concurrent_tasks
            gone = worker.status in (WorkerStatus.CRASHED, WorkerStatus.OFFLINE)
            queued = self.queue.queued_ids(f"@{worker_id}")
            running = loads[worker_id] - len(queued)
            spare = 0 if gone else max(capacity - running, 0)
            for task in [t for t in self.queue.get_many(queued[spare:]) if t is not None]:
                target = self._pick(task, [w for w in idle if w.id != worker_id], loads)
                self.queue.reassign(task.id, target.id if target else None)
                loads[worker_id] -= 1
                if target:
                    loads[target.id] += 1
                moved += 1
        return moved

    def _pick(
        self, task: Task, workers: Sequence[WorkerRegistration], loads: Counter[str]
    ) -> WorkerRegistration | None:
        eligible = [
            w
            for w in workers
            if task.type in w.capabilities.supported_task_types
            and loads[w.id] < w.capabilities.max_concurrent_tasks
        ]
        return min(eligible, key=lambda w: (loads[w.id], w.id), default=None)

    def _loads(self) -> Counter[str]:
        """Per worker: tasks it runs plus tasks waiting in its own queue."""
        loads: Counter[str] = Counter(self.queue.holders().values())
        for worker_id in self.registry.live_worker_ids():
            loads[worker_id] += self.queue.queued_count(f"@{worker_id}")
        return loads


__all__ = ["AssignmentResult", "TaskAssigner"]
