"""What the queue does for agent tasks: fleet-wide rate-limit cooldowns, per-worker refusals,
and run budgets, all decided inside the claim and finish scripts."""

import json

import pytest

from shim_core import Task, TaskResult, TaskStatus, WorkerRegistration
from shim_core.doctor import check_invariants
from shim_core.models import TaskOutcome
from shim_core.registry import WorkerRegistry
from tests.helpers import server_ms


def agent_task(task_id, agent="claude", **kwargs):
    return Task(id=task_id, executor="agent", params={"agent": agent}, **kwargs)


def rate_limited(reset_ms=None, cost=None):
    return TaskResult(
        success=False,
        error="rate limited",
        outcome=TaskOutcome.RATE_LIMITED,
        retry_at_ms=reset_ms,
        cost_usd=cost,
    )


def test_agent_field_comes_from_the_params_of_an_agent_task(shim_queue):
    """The queue records which agent an agent task uses; other tasks have none."""
    shim_queue.add_many([agent_task("a", "codex"), Task(id="b", executor="shell")])
    assert shim_queue.get("a").agent == "codex"
    assert shim_queue.get("b").agent is None


def test_throttle_spends_no_attempt_and_cools_the_agent_down_fleet_wide(shim_queue):
    """A rate limit sends the task to retrying until the reset, gives its attempt back, and
    claims move the agent's other pending tasks out of the way until then (other agents' and
    plain tasks are still claimed)."""
    shim_queue.add_many([agent_task("a"), agent_task("b"), agent_task("c", "codex"), Task(id="d")])
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    assert claim.task.id == "a"
    reset = server_ms(shim_queue.client) + 60_000
    until = shim_queue.throttle("a", claim.token, "claude", rate_limited(reset, cost=0.25))
    assert abs(until.timestamp() * 1000 - reset) < 1000
    a = shim_queue.get("a")
    assert a.status is TaskStatus.RETRYING
    assert a.attempts == 0
    assert "claude" in shim_queue.cooldowns()
    claimed = [c.task.id for c in shim_queue.claim(["code"], worker_id="w2", count=10)]
    assert claimed == ["c", "d"]
    b = shim_queue.get("b")
    assert b.status is TaskStatus.RETRYING
    assert b.attempts == 0
    assert abs(b.due_at.timestamp() * 1000 - reset) < 1000
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_a_cooldown_without_a_reported_reset_lasts_the_default_and_is_capped(shim_queue):
    """No reset time: the default cooldown; a reset days away is capped at one day."""
    shim_queue.add_many([agent_task("a"), agent_task("b", "codex")])
    now = server_ms(shim_queue.client)
    claims = {c.task.id: c for c in shim_queue.claim(["code"], worker_id="w1", count=2)}
    shim_queue.throttle("a", claims["a"].token, "claude", rate_limited(), cooldown_ms=5_000)
    later = now + 30 * 86_400_000
    shim_queue.throttle("b", claims["b"].token, "codex", rate_limited(later))
    ends = {k: v.timestamp() * 1000 for k, v in shim_queue.cooldowns().items()}
    assert 4_000 < ends["claude"] - now < 7_000
    assert ends["codex"] - now <= 86_400_000 + 1_000


def test_a_cooled_down_task_is_claimable_again_once_the_cooldown_ends(shim_queue):
    """When the cooldown is over the task is promoted and claimed like a due retry."""
    shim_queue.add(agent_task("a"))
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    shim_queue.throttle("a", claim.token, "claude", rate_limited(), cooldown_ms=300)
    assert shim_queue.claim(["code"], worker_id="w1") == []
    again = shim_queue.claim(["code"], worker_id="w1", block=5)
    assert [c.task.id for c in again] == ["a"]
    assert again[0].task.attempts == 1


def test_throttle_with_a_stale_lease_is_refused(shim_queue):
    """Fencing holds for rate limits too: a superseded lease cannot park the task."""
    from shim_core import StaleLease

    shim_queue.add(agent_task("a"))
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    shim_queue.reassign("a")
    with pytest.raises(StaleLease):
        shim_queue.throttle("a", claim.token, "claude", rate_limited())


def test_a_worker_that_refuses_an_agent_leaves_its_tasks_to_others(shim_connection, shim_queue):
    """Claims by a worker that refused ``claude`` skip claude tasks (even at the head of the
    queue) and take the next task; another worker takes the claude task."""
    registry = WorkerRegistry(shim_connection, shim_queue.settings)
    for worker in ("w1", "w2"):
        registry.register_worker(WorkerRegistration(id=worker), heartbeat_interval=10)
    registry.refuse_agent("w1", {"claude": "agent CLI 'claude' not found on PATH"})
    shim_queue.add_many([agent_task("a"), Task(id="b")])
    assert [c.task.id for c in shim_queue.claim(["code"], worker_id="w1")] == ["b"]
    assert shim_queue.claim(["code"], worker_id="w1") == []
    assert [c.task.id for c in shim_queue.claim(["code"], worker_id="w2")] == ["a"]
    assert registry.get_worker("w1").refused_agents == {
        "claude": "agent CLI 'claude' not found on PATH"
    }


def test_costs_add_up_per_run_and_a_spent_budget_cancels_the_rest(shim_queue):
    """Completions and failures add their cost to the run; once the budget is spent, the run's
    pending agent tasks are cancelled at claim time (dependents with them) while plain tasks and
    other runs go on."""
    keys = shim_queue.keys
    shim_queue.client.hset(keys.run("r1"), mapping={"budget_usd": "1.0"})
    shim_queue.add_many(
        [
            agent_task("r1:a", run_id="r1"),
            agent_task("r1:b", run_id="r1"),
            agent_task("r1:c", run_id="r1", dependencies=("r1:b",)),
            Task(id="r1:d", run_id="r1"),
            agent_task("r2:a", run_id="r2"),
        ]
    )
    first = shim_queue.claim(["code"], worker_id="w1")[0]
    assert first.task.id == "r1:a"
    shim_queue.complete("r1:a", first.token, TaskResult(success=True, cost_usd=0.75))
    second = shim_queue.claim(["code"], worker_id="w1")[0]
    assert second.task.id == "r1:b"
    failed = TaskResult(success=False, error="x", cost_usd=0.5)
    shim_queue.fail("r1:b", second.token, failed, permanent=False)
    assert float(shim_queue.client.hget(keys.run("r1"), "cost_usd")) == pytest.approx(1.25)
    claimed = [c.task.id for c in shim_queue.claim(["code"], worker_id="w1", count=5)]
    assert claimed == ["r1:d", "r2:a"]
    assert shim_queue.get("r1:b").status is TaskStatus.RETRYING
    assert shim_queue.claim(["code"], worker_id="w1", block=3) == []  # b comes due: cancelled
    assert shim_queue.get("r1:b").status is TaskStatus.CANCELLED
    assert shim_queue.get("r1:c").status is TaskStatus.CANCELLED
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_budget_exhausted_is_the_reason_given(shim_queue):
    """The cancelled task says why."""
    shim_queue.client.hset(shim_queue.keys.run("r"), mapping={"budget_usd": "0.5"})
    shim_queue.add_many([agent_task("r:a", run_id="r"), agent_task("r:b", run_id="r")])
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    shim_queue.complete(claim.task.id, claim.token, TaskResult(success=True, cost_usd=0.6))
    assert shim_queue.claim(["code"], worker_id="w1") == []
    other = "r:b" if claim.task.id == "r:a" else "r:a"
    task = shim_queue.get(other)
    assert task.status is TaskStatus.CANCELLED
    assert task.result.error == "budget exhausted: run r spent $0.6 of $0.5"
    assert (
        json.loads(shim_queue.client.hget(shim_queue.keys.task(other), "result"))["success"]
        is False
    )


def test_a_run_record_that_holds_no_numbers_stops_its_spending_and_fails_no_claim(shim_queue):
    """A budget written by hand as text: the run's tasks are cancelled saying so, and the claim
    goes on to the other tasks (a script error here would stop every claim of the queue)."""
    shim_queue.client.hset(shim_queue.keys.run("r"), mapping={"budget_usd": "lots"})
    shim_queue.add_many([agent_task("r:a", run_id="r"), Task(id="plain")])
    assert [c.task.id for c in shim_queue.claim(["code"], worker_id="w1", count=2)] == ["plain"]
    cancelled = shim_queue.get("r:a")
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.result.error == "budget unreadable: run r has budget_usd lots, cost_usd 0"
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_a_cost_total_that_is_no_number_does_not_fail_the_completion(shim_queue):
    """The completion that reports a cost is recorded; the run's next task is stopped."""
    keys = shim_queue.keys
    shim_queue.client.hset(keys.run("r"), "budget_usd", "5")
    shim_queue.add_many([agent_task("r:a", run_id="r")])
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    shim_queue.client.hset(keys.run("r"), "cost_usd", "oops")  # after the claim checked it
    shim_queue.complete("r:a", claim.token, TaskResult(success=True, cost_usd=0.25))
    assert shim_queue.get("r:a").status is TaskStatus.COMPLETE
    shim_queue.add(agent_task("r:b", run_id="r"))
    assert shim_queue.claim(["code"], worker_id="w1") == []
    assert shim_queue.get("r:b").result.error.startswith("budget unreadable: run r")


def test_a_repeated_throttle_is_recognised_not_fenced(shim_queue):
    """The client may send a script again when its reply was lost: the same lease's second
    throttle reports the cooldown already recorded."""
    shim_queue.add(agent_task("a"))
    claim = shim_queue.claim(["code"], worker_id="w1")[0]
    first = shim_queue.throttle("a", claim.token, "claude", rate_limited(), cooldown_ms=5_000)
    again = shim_queue.throttle("a", claim.token, "claude", rate_limited(), cooldown_ms=5_000)
    assert again == first
    assert shim_queue.get("a").attempts == 0
