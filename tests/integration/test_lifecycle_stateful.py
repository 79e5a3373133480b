"""Random operation sequences (hypothesis) never break the queue's invariants.

After every step: each task is in exactly one state set matching its status, counts are exact,
no task ever completes twice, a task only runs once all its dependencies completed, and a stale
lease never changes anything.
"""

import contextlib
import os
import time
import uuid

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pytest_shim import delete_namespace
from shim_core import (
    InvalidTransition,
    Priority,
    RedisConnectionManager,
    Settings,
    StaleLease,
    Task,
    TaskQueue,
    TaskStatus,
)
from shim_core.doctor import check_invariants

TYPES = ("code", "test")
RUN_OR_DONE = {TaskStatus.CLAIMED, TaskStatus.RUNNING, TaskStatus.COMPLETE}


def make_machine(url: str) -> type[RuleBasedStateMachine]:
    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.connection = RedisConnectionManager(url)
            self.settings = Settings(
                redis_url=url, namespace=f"hyp-{uuid.uuid4().hex[:10]}", backoff_ms=1
            )
            self.queue = TaskQueue(self.connection, self.settings)
            self.ids: list[str] = []
            self.held: dict[str, int] = {}  # task id -> token this "worker" holds
            self.stale: list[tuple[str, int]] = []
            self.completed: set[str] = set()

        def teardown(self) -> None:
            delete_namespace(self.connection, self.settings.namespace)
            self.connection.disconnect()

        @rule(n=st.integers(1, 4), data=st.data())
        def add(self, n: int, data: st.DataObject) -> None:
            batch = []
            for _ in range(n):
                known = self.ids + [t.id for t in batch]
                deps = data.draw(
                    st.lists(st.sampled_from(known), max_size=2, unique=True)
                    if known
                    else st.just([])
                )
                batch.append(
                    Task(
                        id=f"t{len(self.ids) + len(batch)}",
                        type=data.draw(st.sampled_from(TYPES)),
                        priority=data.draw(st.sampled_from(list(Priority))),
                        dependencies=tuple(deps),
                        max_attempts=data.draw(st.integers(1, 3)),
                        max_stalled=data.draw(st.integers(0, 2)),
                    )
                )
            self.queue.add_many(batch)
            self.ids += [t.id for t in batch]

        @rule(types=st.sets(st.sampled_from(TYPES), min_size=1), count=st.integers(1, 3))
        def claim(self, types: set[str], count: int) -> None:
            for claim in self.queue.claim(sorted(types), worker_id="w", count=count):
                assert claim.task.id not in self.completed
                self.held[claim.task.id] = claim.token

        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            if not self.held:
                return
            task_id = data.draw(st.sampled_from(sorted(self.held)))
            token = self.held.pop(task_id)
            try:
                self.queue.complete(task_id, token)
            except (StaleLease, InvalidTransition):
                return  # reaped, cancelled: refused, and the invariants prove nothing changed
            assert task_id not in self.completed, "completed twice"
            self.completed.add(task_id)
            self.stale.append((task_id, token))

        @rule(data=st.data(), types=st.sets(st.sampled_from(TYPES), min_size=1))
        def complete_and_claim(self, data: st.DataObject, types: set[str]) -> None:
            if not self.held:
                return
            task_id = data.draw(st.sampled_from(sorted(self.held)))
            token = self.held.pop(task_id)
            try:
                _, claims = self.queue.complete_and_claim(
                    task_id, token, None, sorted(types), worker_id="w"
                )
            except (StaleLease, InvalidTransition):
                return
            assert task_id not in self.completed, "completed twice"
            self.completed.add(task_id)
            self.stale.append((task_id, token))
            for claim in claims:
                assert claim.task.id not in self.completed
                self.held[claim.task.id] = claim.token

        @rule(data=st.data(), permanent=st.booleans())
        def fail(self, data: st.DataObject, permanent: bool) -> None:
            if not self.held:
                return
            task_id = data.draw(st.sampled_from(sorted(self.held)))
            token = self.held.pop(task_id)
            try:
                self.queue.fail(task_id, token, "boom", permanent=permanent)
            except (StaleLease, InvalidTransition):
                return
            self.stale.append((task_id, token))

        @rule(data=st.data())
        def expire(self, data: st.DataObject) -> None:
            if not self.held:
                return
            task_id = data.draw(st.sampled_from(sorted(self.held)))
            self.queue.extend([(task_id, self.held[task_id])], lease_ms=1)
            time.sleep(0.003)
            self.queue.reap_stalled()

        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            if not self.ids:
                return
            task_id = data.draw(st.sampled_from(self.ids))
            try:
                self.queue.cancel(task_id)
            except InvalidTransition:
                assert self.queue.get(task_id).status in (TaskStatus.COMPLETE, TaskStatus.FAILED)

        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            if not self.held:
                return
            task_id = data.draw(st.sampled_from(sorted(self.held)))
            token = self.held.pop(task_id)
            with contextlib.suppress(StaleLease, InvalidTransition):
                self.queue.release(task_id, token)
            self.stale.append((task_id, token))

        @rule(data=st.data())
        def reassign(self, data: st.DataObject) -> None:
            if not self.ids:
                return
            task_id = data.draw(st.sampled_from(self.ids))
            with contextlib.suppress(InvalidTransition):
                self.queue.reassign(task_id)
                if task_id in self.held:
                    self.stale.append((task_id, self.held.pop(task_id)))

        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            if not self.ids:
                return
            task_id = data.draw(st.sampled_from(self.ids))
            with contextlib.suppress(InvalidTransition):
                self.queue.retry(task_id)
                self.completed.discard(task_id)

        @rule(data=st.data())
        def replay_stale(self, data: st.DataObject) -> None:
            """An old lease used again (a zombie worker) never changes a task."""
            if not self.stale:
                return
            task_id, token = data.draw(st.sampled_from(self.stale))
            before = self.queue.get(task_id)
            if self.held.get(task_id) == token:
                return
            with contextlib.suppress(StaleLease, InvalidTransition):
                self.queue.fail(task_id, token, "zombie")
            after = self.queue.get(task_id)
            assert (after.status, after.result, after.attempts) == (
                before.status,
                before.result,
                before.attempts,
            )

        @invariant()
        def state_sets_are_consistent(self) -> None:
            assert check_invariants(self.queue.client, self.queue.keys) == []

        @invariant()
        def only_tasks_with_complete_dependencies_run(self) -> None:
            tasks = {t.id: t for t in self.queue.get_many(self.ids) if t is not None}
            for task in tasks.values():
                if task.status in RUN_OR_DONE:
                    assert all(tasks[d].status is TaskStatus.COMPLETE for d in task.dependencies)

    return QueueMachine


def test_random_operation_sequences_keep_every_invariant(shim_redis_url):
    """Hypothesis drives add/claim/complete/fail/expire/cancel and checks after every step."""
    machine = make_machine(shim_redis_url)
    machine.TestCase.settings = settings(
        max_examples=int(os.environ.get("SHIM_HYPOTHESIS_EXAMPLES", "40")),
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine.TestCase().runTest()
