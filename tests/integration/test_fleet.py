"""End-to-end fleets of real worker processes: crashes (SIGKILL), hangs (SIGSTOP), and nothing
lost or completed twice. Run with ``pytest --shim-workers=N`` to change the default fleet size."""

import threading

import pytest

from shim_core import Channels, Task, TaskStatus
from shim_core.doctor import check_invariants
from tests.helpers import wait_until


def sim(task_id, duration=0.0, steps=4, **params):
    return Task(
        id=task_id, executor="sim", params={"duration": duration, "progress_steps": steps, **params}
    )


class CompletionLog:
    """Counts task:completed events per task id (exactly-once completion, seen from outside)."""

    def __init__(self, bus):
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        bus.subscribe(Channels.TASK_COMPLETED, self)
        wait_until(lambda: bus.subscriber_count(Channels.TASK_COMPLETED) > 0)

    def __call__(self, event, channel):
        with self.lock:
            self.counts[event.task_id] = self.counts.get(event.task_id, 0) + 1


@pytest.mark.shim_real_redis
def test_fleet_runs_tasks_to_completion(shim_fleet, shim_queue):
    """The default fleet (--shim-workers) completes a batch of simulated tasks."""
    shim_queue.add_many([sim(f"t{i}", 0.05) for i in range(12)])
    shim_fleet.wait_idle(timeout=60)
    stats = shim_queue.stats()
    assert stats.complete == 12
    done_by = {t.worker_id for t in shim_queue.get_many(f"t{i}" for i in range(12))}
    assert done_by <= {w.id for w in shim_fleet.workers}


@pytest.mark.shim_real_redis
def test_sigkilled_worker_task_resumes_from_checkpoint_on_another(
    shim_fleet_factory, shim_queue, shim_bus
):
    """A worker SIGKILLed mid-task: the task is reassigned, completes once on another worker,
    and resumes from its last checkpoint instead of restarting."""
    completions = CompletionLog(shim_bus)
    fleet = shim_fleet_factory(workers=2, heartbeat=10.0)  # default heartbeat: liveness decides
    shim_queue.add(sim("long", duration=4.0, steps=8))
    victim = wait_until(lambda: fleet.worker_running("long"), timeout=30)
    # progress is reported just before each step's checkpoint: at 3/8, steps 1-2 are saved
    wait_until(lambda: shim_queue.get("long").progress >= 0.375, timeout=30)
    victim.kill()

    task = wait_until(
        lambda: (t := shim_queue.get("long")).status is TaskStatus.COMPLETE and t, timeout=60
    )
    assert task.worker_id != victim.id
    assert (task.attempts, task.stalls) == (2, 1)
    assert task.result.output["resumed_from"] >= 2  # at least the 2 checkpointed steps
    wait_until(lambda: completions.counts.get("long") == 1)
    crashed = fleet.registry.get_worker(victim.id)
    assert crashed.status.value == "crashed"
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


@pytest.mark.shim_real_redis
def test_frozen_worker_late_completion_is_fenced(shim_fleet_factory, shim_queue, shim_bus):
    """A worker frozen (SIGSTOP) past the crash threshold loses its task to another worker; when
    resumed, its late completion is refused by the fence and reported, and the recorded result
    stays the other worker's."""
    completions = CompletionLog(shim_bus)
    fleet = shim_fleet_factory(workers=2, heartbeat=0.3)
    shim_queue.add(sim("slow", duration=2.0, steps=2))
    frozen = wait_until(lambda: fleet.worker_running("slow"), timeout=30)
    frozen.pause()
    task = wait_until(
        lambda: (t := shim_queue.get("slow")).status is TaskStatus.COMPLETE and t, timeout=60
    )
    assert task.worker_id != frozen.id
    frozen.resume()
    wait_until(lambda: "refused" in frozen.log(), timeout=30)
    assert "late result of task slow refused" in frozen.log()
    assert shim_queue.get("slow").worker_id == task.worker_id
    assert shim_queue.get("slow").result == task.result
    wait_until(lambda: completions.counts.get("slow") == 1)  # the event may trail the state
    assert completions.counts == {"slow": 1}
    # The frozen worker noticed it had been declared crashed and joined the fleet again.
    wait_until(lambda: frozen.id in fleet.registry.live_worker_ids(), timeout=30)


@pytest.mark.shim_real_redis
def test_several_workers_killed_at_once_lose_nothing(shim_fleet_factory, shim_queue, shim_bus):
    """Five workers, 100 tasks, two SIGKILLed together mid-run: every task completes exactly
    once."""
    completions = CompletionLog(shim_bus)
    fleet = shim_fleet_factory(workers=5, heartbeat=10.0)
    shim_queue.add_many([sim(f"t{i:03d}", 0.1, steps=2) for i in range(100)])
    wait_until(lambda: shim_queue.stats().complete >= 20, timeout=60)
    busy = [w for w in fleet.workers if fleet.registry.get_worker(w.id).current_task][:2]
    victims = busy if len(busy) == 2 else fleet.workers[:2]
    for victim in victims:
        victim.kill()
    fleet.wait_idle(timeout=120)
    stats = shim_queue.stats()
    assert (stats.complete, stats.failed, stats.cancelled) == (100, 0, 0)
    wait_until(lambda: len(completions.counts) == 100, timeout=10)
    assert set(completions.counts.values()) == {1}
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


@pytest.mark.shim_real_redis
def test_slow_and_flaky_workers_still_finish_everything(shim_fleet_factory, shim_queue):
    """A fleet with a slow worker and a flaky one (failing a third of its attempts) completes
    every task, the flaky failures retried elsewhere or later."""
    fleet = shim_fleet_factory(workers=1, heartbeat=1.0)
    fleet.add_worker(slow=3.0)
    fleet.add_worker(flaky=0.3)
    shim_queue.add_many(
        [
            Task(
                id=f"t{i}",
                executor="sim",
                backoff_ms=10,
                max_attempts=10,
                params={"duration": 0.05, "progress_steps": 1},
            )
            for i in range(30)
        ]
    )
    fleet.wait_idle(timeout=120)
    assert shim_queue.stats().complete == 30


@pytest.mark.shim_real_redis
def test_sigterm_finishes_running_task_then_leaves(shim_fleet_factory, shim_queue):
    """SIGTERM lets the running task finish within the grace period, then the worker exits 0 and
    is marked offline."""
    fleet = shim_fleet_factory(workers=1, heartbeat=1.0)
    shim_queue.add(sim("t", duration=2.0, steps=4))
    worker = wait_until(lambda: fleet.worker_running("t"), timeout=30)
    wait_until(lambda: shim_queue.get("t").progress > 0, timeout=30)  # executing, not just claimed
    code = worker.terminate(timeout=30)
    assert code == 0, worker.log()[-3000:]
    assert shim_queue.get("t").status is TaskStatus.COMPLETE
    assert fleet.registry.get_worker(worker.id).status.value == "offline"


def test_thread_fleet_works_on_any_backend(shim_fleet_factory, shim_queue):
    """Thread fleets run on fakeredis too (for fast tests); here they complete a small DAG."""
    fleet = shim_fleet_factory(workers=2, mode="thread", heartbeat=0.5)
    shim_queue.add_many([sim("a"), sim("b"), Task(id="c", executor="sim", dependencies=("a", "b"))])
    fleet.wait_idle(timeout=60)
    assert shim_queue.stats().complete == 3
