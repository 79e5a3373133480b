"""A tour of the SHIM core queue: the seed's eight-task authentication plan run by three worker
threads through the real Lua scripts, with live events, a retry, and a final invariant check.

Runs on the embedded in-process Redis by default; set SHIM_REDIS_URL to use a real server.

    python examples/queue_demo.py
"""

from __future__ import annotations

import sys
import threading
import time

from shim_core import (
    Channels,
    MessageBus,
    ProgressEvent,
    RedisConnectionManager,
    Settings,
    Task,
    TaskQueue,
    TaskResult,
    check_invariants,
    mask_url,
)

PLAN = [
    ("schema", "Design database schema", "code", ()),
    ("model", "Implement User model", "code", ("schema",)),
    ("service", "Create authentication service", "code", ("model",)),
    ("login", "Build login API endpoint", "code", ("service",)),
    ("register", "Build registration API endpoint", "code", ("service",)),
    ("test-model", "Write tests for User model", "test", ("model",)),
    ("test-service", "Write tests for auth service", "test", ("service",)),
    ("test-api", "Write tests for API endpoints", "test", ("login", "register")),
]
FLAKY = "register"  # fails its first attempt, to show a retry with backoff


def work(queue: TaskQueue, name: str, stop: threading.Event) -> None:
    """One worker: claim (blocking, no polling), report progress, complete or fail."""
    while not stop.is_set():
        for claim in queue.claim(["code", "test"], worker_id=name, block=0.2):
            task = claim.task
            for step in (0.5, 1.0):
                time.sleep(0.05)
                queue.progress(task.id, claim.token, step, f"{task.title}: {int(step * 100)}%")
            if task.id == FLAKY and task.attempts == 1:
                queue.fail(task.id, claim.token, "flaky network, will retry")
                continue
            queue.complete(task.id, claim.token, TaskResult(success=True, output=f"{task.id} done"))


def show(event: ProgressEvent, channel: str) -> None:
    if event.type.value in ("progress", "released"):
        return
    who = f" on {event.worker_id}" if event.worker_id else ""
    detail = f" ({event.completion.error})" if event.completion and event.completion.error else ""
    print(f"  {channel:<15} {event.task_id:<13} attempt {event.attempt}{who}{detail}")


def main() -> int:
    settings = Settings.load(backoff_ms=200)
    connection = RedisConnectionManager(settings.redis_url)
    connection.connect()
    queue = TaskQueue(connection, settings)
    queue.drain()
    queue.clean(grace_ms=0)
    bus = MessageBus(connection, settings)
    bus.psubscribe(Channels.TASK_EVENTS, show)

    tasks = [Task(id=i, title=t, type=ty, dependencies=d) for i, t, ty, d in PLAN]
    queue.add_many(tasks)
    print(f"Redis: {mask_url(settings.redis_url)}  namespace: {settings.namespace}")
    print(
        f"Added {len(tasks)} tasks; {queue.stats().pending} claimable now, the rest wait on "
        "their dependencies.\nEvents:"
    )

    stop = threading.Event()
    workers = [threading.Thread(target=work, args=(queue, f"worker-{n}", stop)) for n in (1, 2, 3)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while queue.stats().complete < len(tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for w in workers:
        w.join()
    time.sleep(0.1)  # let the last events print
    bus.close()

    stats = queue.stats()
    order = sorted(queue.get_many(t.id for t in tasks), key=lambda t: t.completed_at)
    print("Completion order:", " -> ".join(t.id for t in order))
    print(f"Stats: {stats.complete} complete, {stats.failed} failed, {stats.pending} pending")
    violations = check_invariants(queue.client, queue.keys)
    print("Invariant check:", violations or "no violations")
    connection.disconnect()
    return 0 if stats.complete == len(tasks) and not violations else 1


if __name__ == "__main__":
    sys.exit(main())
