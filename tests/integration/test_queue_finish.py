"""Finishing tasks: completion with fencing, retries with backoff, dependencies, cancellation,
stalled leases, and the queue-control operations."""

import time

import attrs
import pytest

from shim_core import (
    InvalidTransition,
    StaleLease,
    Task,
    TaskNotFound,
    TaskQueue,
    TaskResult,
    TaskStatus,
    ValidationError,
)
from shim_core.doctor import check_invariants
from tests.helpers import server_ms, wait_until


def claim_one(queue, task_id, **kwargs):
    claims = queue.claim(["code"], worker_id=kwargs.pop("worker_id", "w1"), **kwargs)
    assert [c.task.id for c in claims] == [task_id]
    return claims[0]


def assert_consistent(queue):
    assert check_invariants(queue.client, queue.keys) == []


def test_complete_records_result_and_duration(shim_queue):
    """Completion stores the result, finish time and duration, and counts the task complete."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    result = TaskResult(success=True, output={"lines": 3}, files_modified=("a.py",))
    assert shim_queue.complete("a", claim.token, result) == 0
    task = shim_queue.get("a")
    assert task.status is TaskStatus.COMPLETE
    assert task.result == result
    assert task.completed_at >= task.claimed_at
    assert task.actual_duration >= 0
    assert shim_queue.stats().complete == 1
    assert_consistent(shim_queue)


@pytest.mark.shim_real_redis  # OBJECT ENCODING: the embedded store has no such command
def test_a_small_result_is_stored_without_its_defaults_and_decodes_whole(shim_queue):
    """A result is stored without the fields at their default, so the finished task's hash
    keeps Redis's compact encoding; reading it back gives the whole result."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    result = TaskResult(success=True, output=7, duration_ms=2)
    shim_queue.complete("a", claim.token, result)
    key = shim_queue.keys.task("a")
    assert shim_queue.client.hget(key, "result") == '{"success":true,"output":7,"duration_ms":2}'
    assert shim_queue.client.object("encoding", key) in ("listpack", "ziplist")
    assert shim_queue.get("a").result == result


def test_stale_token_is_rejected_and_holder_completes(shim_queue):
    """A complete carrying an old lease is refused; the real holder's complete wins."""
    shim_queue.add(Task(id="a"))
    first = claim_one(shim_queue, "a", worker_id="w1", lease_ms=1)
    time.sleep(0.01)
    assert shim_queue.reap_stalled() == {"a": TaskStatus.PENDING}
    second = claim_one(shim_queue, "a", worker_id="w2")
    with pytest.raises(StaleLease) as info:
        shim_queue.complete("a", first.token, TaskResult(success=True, output="zombie"))
    assert info.value.task_id == "a"
    assert shim_queue.get("a").status is TaskStatus.RUNNING
    shim_queue.complete("a", second.token, TaskResult(success=True, output="real"))
    task = shim_queue.get("a")
    assert (task.result.output, task.worker_id) == ("real", "w2")
    with pytest.raises(StaleLease):
        shim_queue.fail("a", first.token, "late failure")
    with pytest.raises(StaleLease):
        shim_queue.progress("a", first.token, 0.5)
    assert shim_queue.get("a").result.output == "real"


def test_repeated_complete_with_same_lease_is_harmless(shim_queue):
    """A retried complete call (same lease) after success changes nothing and raises nothing."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    shim_queue.complete("a", claim.token, TaskResult(success=True, output=1))
    shim_queue.complete("a", claim.token, TaskResult(success=True, output=2))
    assert shim_queue.get("a").result.output == 1
    assert shim_queue.stats().complete == 1


def test_operations_on_missing_task_raise_not_found(shim_queue):
    """complete / fail / progress / cancel / start on an unknown id raise TaskNotFound."""
    for call in (
        lambda: shim_queue.complete("x", 1),
        lambda: shim_queue.fail("x", 1, "e"),
        lambda: shim_queue.progress("x", 1, 0.1),
        lambda: shim_queue.cancel("x"),
        lambda: shim_queue.start("x", 1),
    ):
        with pytest.raises(TaskNotFound):
            call()


def test_failure_retries_with_exponential_backoff_from_server_time(shim_queue):
    """A failed attempt waits in the delayed set until now + 1 s (attempt 1) by Redis time."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    before = server_ms(shim_queue.client)
    outcome = shim_queue.fail("a", claim.token, "boom")
    after = server_ms(shim_queue.client)
    score = shim_queue.client.zscore(shim_queue.keys.delayed, "a")
    assert before + 1000 <= score <= after + 1000
    assert not outcome.final
    assert outcome.due_at.timestamp() * 1000 == score
    task = shim_queue.get("a")
    assert (task.status, task.result.error) == (TaskStatus.RETRYING, "boom")
    assert shim_queue.stats().delayed == 1
    assert shim_queue.claim(["code"]) == []  # not due yet
    assert_consistent(shim_queue)


def test_backoff_doubles_each_attempt_then_fails_for_good(shim_queue):
    """Delays grow base, 2x base, 4x base; the attempt after the last fails permanently."""
    shim_queue.add(Task(id="a", max_attempts=4, backoff_ms=20))
    delays = []
    for _ in range(3):
        claim = wait_until(lambda: shim_queue.claim(["code"]))[0]
        before = server_ms(shim_queue.client)
        shim_queue.fail("a", claim.token, "boom")
        after = server_ms(shim_queue.client)
        score = shim_queue.client.zscore(shim_queue.keys.delayed, "a")
        delays.append((score - after, score - before))
    for (low, high), expected in zip(delays, (20, 40, 80), strict=True):
        assert low <= expected <= high
    claim = wait_until(lambda: shim_queue.claim(["code"]))[0]
    assert claim.task.attempts == 4
    outcome = shim_queue.fail("a", claim.token, "still broken")
    assert outcome.final
    task = shim_queue.get("a")
    assert (task.status, task.attempts) == (TaskStatus.FAILED, 4)
    assert shim_queue.stats().failed == 1
    assert_consistent(shim_queue)


def test_jitter_stretches_backoff_within_its_fraction(shim_connection, shim_settings):
    """With jitter 0.5 the delay lies between base and 1.5x base."""
    queue = TaskQueue(shim_connection, attrs.evolve(shim_settings, backoff_jitter=0.5))
    queue.add_many([Task(id=f"t{i}") for i in range(10)])
    for claim in queue.claim(["code"], count=10):
        before = server_ms(queue.client)
        queue.fail(claim.task.id, claim.token, "x")
        after = server_ms(queue.client)
        score = queue.client.zscore(queue.keys.delayed, claim.task.id)
        assert before + 1000 <= score <= after + 1500


def test_permanent_failure_skips_retries(shim_queue):
    """fail(permanent=True) fails the task at once even with attempts left."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    assert shim_queue.fail("a", claim.token, "bad input", permanent=True).final
    assert shim_queue.get("a").status is TaskStatus.FAILED
    assert shim_queue.fail("a", claim.token, "again").final  # repeated call is harmless


def test_completion_releases_dependents_atomically(shim_queue):
    """A task becomes claimable exactly when its last dependency completes."""
    shim_queue.add_many([Task(id="a"), Task(id="b"), Task(id="c", dependencies=("a", "b"))])
    claims = {c.task.id: c for c in shim_queue.claim(["code"], count=5)}
    assert set(claims) == {"a", "b"}
    assert shim_queue.complete("a", claims["a"].token) == 0
    assert shim_queue.get("c").status is TaskStatus.WAITING
    assert shim_queue.get("c").deps_left == 1
    assert shim_queue.complete("b", claims["b"].token) == 1
    assert shim_queue.get("c").status is TaskStatus.PENDING
    assert [c.task.id for c in shim_queue.claim(["code"])] == ["c"]
    assert_consistent(shim_queue)


def test_final_failure_cancels_dependents_transitively(shim_queue):
    """When a task fails for good, its dependents and theirs are cancelled; others go on."""
    shim_queue.add_many(
        [
            Task(id="a", max_attempts=1),
            Task(id="b", dependencies=("a",)),
            Task(id="c", dependencies=("b",)),
            Task(id="other"),
        ]
    )
    claim = next(c for c in shim_queue.claim(["code"], count=2) if c.task.id == "a")
    outcome = shim_queue.fail("a", claim.token, "boom")
    assert outcome.cancelled_dependents == 2
    for task_id in ("b", "c"):
        task = shim_queue.get(task_id)
        assert task.status is TaskStatus.CANCELLED
        assert task.result.error == "dependency a failed"  # the root cause, for every level
    assert shim_queue.get("other").status is TaskStatus.RUNNING
    assert_consistent(shim_queue)


def test_cancel_pending_waiting_and_running_tasks(shim_queue):
    """Cancel works in every unfinished state; a cancelled running task's completion is refused."""
    shim_queue.add_many(
        [Task(id="run"), Task(id="pend", type="test"), Task(id="wait", dependencies=("run",))]
    )
    claim = claim_one(shim_queue, "run")
    assert shim_queue.cancel("pend") == 0
    assert shim_queue.cancel("run", reason="user asked") == 1  # "wait" goes with it
    assert shim_queue.cancel("run") == 0  # idempotent
    assert shim_queue.get("run").result.error == "user asked"
    assert shim_queue.get("wait").status is TaskStatus.CANCELLED
    with pytest.raises(InvalidTransition, match="cancelled"):
        shim_queue.complete("run", claim.token)
    assert shim_queue.extend([("run", claim.token)]) == ["run"]
    assert shim_queue.stats().cancelled == 3
    assert_consistent(shim_queue)


def test_cancel_refuses_finished_tasks(shim_queue):
    """A completed task cannot be cancelled."""
    shim_queue.add(Task(id="a"))
    shim_queue.complete("a", claim_one(shim_queue, "a").token)
    with pytest.raises(InvalidTransition, match="complete"):
        shim_queue.cancel("a")


def test_cancel_a_retrying_task(shim_queue):
    """A task in retry backoff can be cancelled and leaves the delayed set."""
    shim_queue.add(Task(id="a"))
    shim_queue.fail("a", claim_one(shim_queue, "a").token, "x")
    shim_queue.cancel("a")
    assert shim_queue.client.zcard(shim_queue.keys.delayed) == 0
    assert_consistent(shim_queue)


def test_expired_lease_is_reaped_back_to_pending(shim_queue):
    """A task whose lease lapsed returns to pending with a stall counted, ready for another."""
    shim_queue.add(Task(id="a"))
    claim_one(shim_queue, "a", lease_ms=1)
    time.sleep(0.01)
    assert shim_queue.reap_stalled() == {"a": TaskStatus.PENDING}
    assert shim_queue.reap_stalled() == {}  # idempotent
    task = shim_queue.get("a")
    assert (task.status, task.stalls, task.lease) == (TaskStatus.PENDING, 1, 0)
    again = claim_one(shim_queue, "a", worker_id="w2")
    assert again.task.attempts == 2
    assert_consistent(shim_queue)


def test_live_lease_is_not_reaped(shim_queue):
    """A task whose lease has not expired is left alone by the reaper."""
    shim_queue.add(Task(id="a"))
    claim_one(shim_queue, "a", lease_ms=60_000)
    assert shim_queue.reap_stalled() == {}


def test_task_stalled_past_max_stalled_fails(shim_queue):
    """With max_stalled 2, the third stall fails the task for good and cancels dependents."""
    shim_queue.add_many([Task(id="a", max_stalled=2), Task(id="b", dependencies=("a",))])
    outcomes = []
    for _ in range(3):
        claim_one(shim_queue, "a", lease_ms=1)
        time.sleep(0.01)
        outcomes.append(shim_queue.reap_stalled()["a"])
    assert outcomes == [TaskStatus.PENDING, TaskStatus.PENDING, TaskStatus.FAILED]
    assert "stalled 3 times" in shim_queue.get("a").result.error
    assert shim_queue.get("b").status is TaskStatus.CANCELLED
    assert_consistent(shim_queue)


def test_extend_renews_live_leases_and_reports_lost_ones(shim_queue):
    """One extend call renews every live lease and names those that are gone."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    claims = {c.task.id: c for c in shim_queue.claim(["code"], count=2, lease_ms=1000)}
    lost = shim_queue.extend([("a", claims["a"].token), ("b", 999_999)], lease_ms=60_000)
    assert lost == ["b"]
    deadline = shim_queue.client.zscore(shim_queue.keys.active, "a")
    assert deadline >= server_ms(shim_queue.client) + 59_000
    assert shim_queue.extend([]) == []


def test_progress_is_recorded_and_extends_the_lease(shim_queue):
    """Progress updates the task and pushes its lease deadline out."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a", lease_ms=1000)
    shim_queue.progress("a", claim.token, 0.25, "a quarter", lease_ms=60_000)
    task = shim_queue.get("a")
    assert (task.progress, task.progress_message) == (0.25, "a quarter")
    assert (
        shim_queue.client.zscore(shim_queue.keys.active, "a")
        >= server_ms(shim_queue.client) + 59_000
    )
    with pytest.raises(ValidationError):
        shim_queue.progress("a", claim.token, 1.5)


def test_progress_on_finished_task_is_refused(shim_queue):
    """Progress after completion is an invalid transition."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    shim_queue.complete("a", claim.token)
    with pytest.raises(InvalidTransition):
        shim_queue.progress("a", claim.token, 0.5)


def test_due_retry_is_promoted_by_the_next_claim(shim_queue):
    """A retry whose backoff has passed is claimable again."""
    shim_queue.add(Task(id="a", backoff_ms=1))
    shim_queue.fail("a", claim_one(shim_queue, "a").token, "x")
    claim = wait_until(lambda: shim_queue.claim(["code"]))[0]
    assert (claim.task.id, claim.task.attempts) == ("a", 2)


def test_blocking_claim_wakes_for_a_retry_coming_due(shim_queue):
    """A blocked claimer picks up a retry when its backoff ends, with no new add."""
    shim_queue.add(Task(id="a", backoff_ms=200))
    shim_queue.fail("a", claim_one(shim_queue, "a").token, "x")
    claims = shim_queue.claim(["code"], block=30)
    assert [c.task.id for c in claims] == ["a"]


def test_drain_removes_everything_not_started(shim_queue):
    """Drain deletes pending, waiting and retrying tasks; running and finished ones stay."""
    shim_queue.add_many([Task(id="run"), Task(id="retry"), Task(id="done")])
    claims = {c.task.id: c for c in shim_queue.claim(["code"], count=3)}
    shim_queue.complete("done", claims["done"].token)
    shim_queue.fail("retry", claims["retry"].token, "x")
    shim_queue.add_many(
        [Task(id=f"p{i}") for i in range(5)] + [Task(id="w", dependencies=("run",))]
    )
    assert shim_queue.drain() == 7
    assert shim_queue.get("w") is None
    assert shim_queue.get("retry") is None
    assert shim_queue.stats().by_type == {"code": {"running": 1, "complete": 1}}
    shim_queue.complete("run", claims["run"].token)  # its drained dependent is skipped
    assert_consistent(shim_queue)


def test_clean_removes_finished_tasks_older_than_grace(shim_queue):
    """clean(grace) deletes finished tasks past the grace period and keeps younger ones."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    for claim in shim_queue.claim(["code"], count=2):
        shim_queue.complete(claim.task.id, claim.token)
    assert shim_queue.clean(grace_ms=3_600_000) == 0
    assert shim_queue.clean(grace_ms=0, statuses=["failed"]) == 0
    assert shim_queue.clean(grace_ms=0) == 2
    assert shim_queue.get("a") is None
    assert shim_queue.stats().total == 0
    with pytest.raises(ValidationError):
        shim_queue.clean(statuses=["pending"])


def test_stats_count_by_type_and_status(shim_queue):
    """Statistics report exact counts per type and status, and the queue's totals."""
    shim_queue.add_many(
        [
            Task(id="c1"),
            Task(id="c2"),
            Task(id="t1", type="test"),
            Task(id="w1", dependencies=("c1",)),
        ]
    )
    claim_one(shim_queue, "c1")
    stats = shim_queue.stats()
    assert stats.by_type == {
        "code": {"pending": 1, "running": 1, "waiting": 1},
        "test": {"pending": 1},
    }
    assert (stats.pending, stats.active, stats.waiting, stats.total) == (2, 1, 1, 4)
    assert shim_queue.waiting_count() == 3
    assert shim_queue.active_count() == 1
    assert not stats.paused


def test_complete_many_records_every_result_in_one_call(shim_queue):
    """A batch completion records each result and releases dependents of all of them."""
    shim_queue.add_many([Task(id="a"), Task(id="b"), Task(id="c", dependencies=("a", "b"))])
    claims = shim_queue.claim(["code"], count=2)
    done = [(c.task.id, c.token, TaskResult(success=True, output=c.task.id)) for c in claims]
    assert shim_queue.complete_many(done) == 1
    assert shim_queue.get("a").result.output == "a"
    assert shim_queue.get("c").status is TaskStatus.PENDING
    assert shim_queue.complete_many([]) == 0
    assert_consistent(shim_queue)


def test_complete_many_reports_a_stale_lease_after_recording_the_rest(shim_queue):
    """One stale lease in a batch raises StaleLease; the valid completions still land."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    claims = {c.task.id: c for c in shim_queue.claim(["code"], count=2)}
    with pytest.raises(StaleLease):
        shim_queue.complete_many([("a", 12345, None), ("b", claims["b"].token, None)])
    assert shim_queue.get("b").status is TaskStatus.COMPLETE
    assert shim_queue.get("a").status is TaskStatus.RUNNING


def test_no_wake_marker_is_left_behind_when_the_queue_empties(shim_queue):
    """After a claim empties a queue its wake marker is gone, so no blocked claimer wakes for
    nothing; while work remains the marker is set."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    shim_queue.claim(["code"])
    assert shim_queue.client.exists(shim_queue.keys.wake("code")) == 1
    shim_queue.claim(["code"])
    assert shim_queue.client.exists(shim_queue.keys.wake("code")) == 0


def test_task_targeted_at_a_departed_worker_goes_to_the_shared_queue(shim_connection, shim_queue):
    """A task waiting on a dependency while its target worker leaves is claimable by anyone
    once released (it would otherwise wait for ever in the departed worker's queue)."""
    from shim_core.models import WorkerRegistration
    from shim_core.registry import WorkerRegistry

    registry = WorkerRegistry(shim_connection, shim_queue.settings)
    registry.register_worker(WorkerRegistration(id="w9"), heartbeat_interval=10)
    shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("a",), assigned_to="w9")])
    registry.unregister_worker("w9")
    shim_queue.complete("a", claim_one(shim_queue, "a", worker_id="other").token)
    assert [c.task.id for c in shim_queue.claim(["code"], worker_id="other")] == ["b"]
    assert_consistent(shim_queue)


def test_repeated_dependency_ids_count_once(shim_queue):
    """A dependency listed twice is one dependency: completing it releases the task."""
    shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("a", "a"))])
    assert shim_queue.get("b").dependencies == ("a",)
    shim_queue.complete("a", claim_one(shim_queue, "a").token)
    assert shim_queue.get("b").status is TaskStatus.PENDING


def test_reused_id_after_drain_is_not_released_by_the_old_dependency(shim_queue):
    """A drained waiting task's id, reused for a new task, waits only for its own
    dependencies."""
    shim_queue.add_many([Task(id="r"), Task(id="x", dependencies=("r",))])
    running = claim_one(shim_queue, "r")
    assert shim_queue.drain() == 1
    shim_queue.add_many([Task(id="z", type="test"), Task(id="x", dependencies=("z",))])
    shim_queue.complete("r", running.token)
    assert shim_queue.get("x").status is TaskStatus.WAITING
    assert_consistent(shim_queue)


def test_reused_id_after_cancel_and_clean_is_not_released_by_the_old_dependency(shim_queue):
    """A cancelled waiting task forgets its dependencies, so a new task reusing its id after
    clean is not released by them."""
    shim_queue.add_many([Task(id="r"), Task(id="x", dependencies=("r",))])
    running = claim_one(shim_queue, "r")
    shim_queue.cancel("x")
    assert shim_queue.clean(grace_ms=0, statuses=["cancelled"]) == 1
    shim_queue.add_many([Task(id="z", type="test"), Task(id="x", dependencies=("z",))])
    shim_queue.complete("r", running.token)
    assert shim_queue.get("x").status is TaskStatus.WAITING


def test_retry_is_refused_when_a_dependency_was_cleaned_away(shim_queue):
    """Retrying a task whose dependency no longer exists is refused with the reason."""
    shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("a",), max_attempts=1)])
    shim_queue.complete("a", claim_one(shim_queue, "a").token)
    shim_queue.fail("b", claim_one(shim_queue, "b").token, "boom")
    shim_queue.clean(grace_ms=0, statuses=["complete"])
    with pytest.raises(InvalidTransition, match="no longer exists"):
        shim_queue.retry("b")


def test_repeated_fail_reports_the_real_state(shim_queue):
    """Repeating a fail call (a resent command) reports retrying, not failed for good."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    first = shim_queue.fail("a", claim.token, "boom")
    again = shim_queue.fail("a", claim.token, "boom")
    assert (first.final, again.final) == (False, False)
    assert again.due_at == first.due_at


def test_release_and_reassign_give_the_attempt_back(shim_queue):
    """A released or reassigned execution does not use up one of the task's attempts."""
    shim_queue.add(Task(id="a", max_attempts=1))
    shim_queue.release("a", claim_one(shim_queue, "a").token)
    claim_one(shim_queue, "a")
    shim_queue.reassign("a")
    claim = claim_one(shim_queue, "a")
    assert claim.task.attempts == 1
    assert shim_queue.complete("a", claim.token) == 0


def test_update_refuses_values_that_would_corrupt_the_task(shim_queue):
    """An update whose values cannot be read back is refused before anything is written."""
    shim_queue.add(Task(id="m"))
    with pytest.raises(ValidationError):
        shim_queue.update("m", max_attempts="lots")
    with pytest.raises(ValidationError):
        shim_queue.update("m", priority="urgent")
    assert shim_queue.get("m").max_attempts == 3


def test_complete_and_claim_finishes_one_task_and_takes_the_next(shim_queue):
    """One call records the completion and claims the next task, including a dependent the
    completion just released."""
    shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("a",))])
    claim = claim_one(shim_queue, "a", worker_id="w1")
    released, claims = shim_queue.complete_and_claim(
        "a", claim.token, TaskResult(success=True, output=1), ["code"], worker_id="w1"
    )
    assert released == 1
    assert [c.task.id for c in claims] == ["b"]
    assert claims[0].token > claim.token
    assert shim_queue.get("a").result.output == 1
    assert shim_queue.get("b").status is TaskStatus.RUNNING
    assert_consistent(shim_queue)


def test_complete_and_claim_with_a_stale_lease_claims_nothing(shim_queue):
    """A refused completion raises and leaves the next task pending."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    claim_one(shim_queue, "a")
    with pytest.raises(StaleLease):
        shim_queue.complete_and_claim("a", 999_999, None, ["code"], worker_id="w1")
    assert shim_queue.get("b").status is TaskStatus.PENDING


def test_complete_and_claim_on_an_empty_queue_only_completes(shim_queue):
    """With nothing left to claim, the call completes the task and returns no claim."""
    shim_queue.add(Task(id="a"))
    claim = claim_one(shim_queue, "a")
    assert shim_queue.complete_and_claim("a", claim.token, None, ["code"]) == (0, [])
    assert shim_queue.get("a").status is TaskStatus.COMPLETE
