"""Claiming: strict priority, FIFO within a band, per-type and targeted claims, blocking waits."""

import json
import random
import threading
import time

import attrs
import pytest
import redis

from shim_core import Priority, Task, TaskQueue, TaskStatus
from shim_core import queue as queue_module
from shim_core.doctor import check_invariants
from tests.helpers import wait_until


def test_priority_then_fifo_over_a_thousand_mixed_tasks(shim_queue):
    """1,000 tasks of mixed priority come out critical > high > normal > low, FIFO in each band."""
    rng = random.Random(7)
    priorities = list(Priority)
    tasks = [Task(id=f"t{i:04d}", priority=rng.choice(priorities)) for i in range(1000)]
    for start in range(0, 1000, 100):  # several batches, as separate submissions would be
        shim_queue.add_many(tasks[start : start + 100])
    claimed = []
    while batch := shim_queue.claim(["code"], worker_id="w", count=64):
        claimed += [c.task.id for c in batch]
    expected = [t.id for t in sorted(tasks, key=lambda t: (t.priority.band, t.id))]
    assert claimed == expected


def test_claim_only_takes_supported_types(shim_queue):
    """A claimer gets tasks of its types only; other types stay pending."""
    shim_queue.add_many(
        [Task(id="c1", type="code"), Task(id="r1", type="research"), Task(id="t1", type="test")]
    )
    got = shim_queue.claim(["test", "research"], count=10)
    assert sorted(c.task.id for c in got) == ["r1", "t1"]
    assert shim_queue.get("c1").status is TaskStatus.PENDING


def test_priority_is_respected_across_types(shim_queue):
    """With several types, the claimer takes the highest-priority head among them."""
    shim_queue.add_many(
        [
            Task(id="low", type="code", priority=Priority.LOW),
            Task(id="crit", type="test", priority=Priority.CRITICAL),
        ]
    )
    assert [c.task.id for c in shim_queue.claim(["code", "test"], count=2)] == ["crit", "low"]


def test_targeted_task_goes_only_to_its_worker(shim_queue):
    """A task assigned to a worker is invisible to others and claimed by that worker."""
    shim_queue.add(Task(id="mine", assigned_to="w2"))
    assert shim_queue.claim(["code"], worker_id="w1") == []
    claims = shim_queue.claim(["code"], worker_id="w2")
    assert [c.task.id for c in claims] == ["mine"]
    assert claims[0].task.worker_id == "w2"


def test_claim_sets_lease_attempt_and_running(shim_queue):
    """A claim starts the task, counts the attempt and hands out a lease token."""
    shim_queue.add(Task(id="a"))
    claim = shim_queue.claim(["code"], worker_id="w1", lease_ms=5000)[0]
    task = claim.task
    assert task.status is TaskStatus.RUNNING
    assert (task.attempts, task.lease, task.worker_id) == (1, claim.token, "w1")
    deadline_ms = (task.lease_deadline - task.claimed_at).total_seconds() * 1000
    assert deadline_ms == 5000
    assert shim_queue.stats().active == 1


def test_each_claim_gets_a_new_increasing_token(shim_queue):
    """Fencing tokens are unique and monotonic across claims."""
    shim_queue.add_many([Task(id=f"t{i}") for i in range(5)])
    tokens = [c.token for c in shim_queue.claim(["code"], count=5)]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 5


def test_claim_without_start_holds_task_as_claimed(shim_queue):
    """start=False leaves the task claimed until start() is called."""
    shim_queue.add(Task(id="a"))
    claim = shim_queue.claim(["code"], start=False)[0]
    assert claim.task.status is TaskStatus.CLAIMED
    shim_queue.start("a", claim.token)
    shim_queue.start("a", claim.token)  # repeating is harmless
    assert shim_queue.get("a").status is TaskStatus.RUNNING
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_empty_queue_returns_nothing_without_blocking(shim_queue):
    """A non-blocking claim on an empty queue returns an empty list."""
    assert shim_queue.claim(["code"]) == []


def test_blocking_claim_times_out_empty(shim_queue):
    """A blocking claim with nothing to do returns empty after its timeout."""
    assert shim_queue.claim(["code"], block=0.2) == []


def test_blocking_claim_wakes_when_a_task_arrives(shim_queue):
    """A claimer blocked on an empty queue receives a task added later by another client."""
    result = []
    claimer = threading.Thread(
        target=lambda: result.extend(shim_queue.claim(["code"], worker_id="w", block=30))
    )
    claimer.start()
    shim_queue.add(Task(id="late"))
    claimer.join(timeout=30)
    assert [c.task.id for c in result] == ["late"]


@pytest.mark.shim_real_redis  # counts blocked clients with INFO
def test_an_interrupted_blocking_claim_returns_when_its_worker_is_woken(shim_queue):
    """With its interrupt set, a claim blocked for a minute returns (empty) once wake_worker
    wakes its worker's queue, before its next wait slice would have ended; another worker's
    claim sleeps on."""
    stop_w, stop_v, result = threading.Event(), threading.Event(), []
    claimer = threading.Thread(
        target=lambda: result.append(
            shim_queue.claim(["code"], worker_id="w", block=60, interrupt=stop_w)
        )
    )
    other = threading.Thread(
        target=lambda: shim_queue.claim(["code"], worker_id="v", block=60, interrupt=stop_v)
    )
    claimer.start()
    other.start()
    wait_until(lambda: shim_queue.client.info("clients")["blocked_clients"] >= 2)

    woken = time.monotonic()
    stop_w.set()
    shim_queue.wake_worker("w")
    claimer.join(timeout=30)

    assert result == [[]]
    assert time.monotonic() - woken < queue_module.MAX_BLOCK_SLICE  # the wake, not a slice
    assert other.is_alive()
    stop_v.set()
    shim_queue.wake_worker("v")
    other.join(timeout=30)
    assert not other.is_alive()


def test_several_blocked_claimers_each_get_a_task(shim_queue):
    """A batch added while several claimers block wakes them all, one task each."""
    results: list[list] = [[] for _ in range(3)]
    threads = [
        threading.Thread(target=lambda r=r: r.extend(shim_queue.claim(["code"], block=30)))
        for r in results
    ]
    for t in threads:
        t.start()
    shim_queue.add_many([Task(id=f"t{i}") for i in range(3)])
    for t in threads:
        t.join(timeout=30)
    assert sorted(r[0].task.id for r in results) == ["t0", "t1", "t2"]


def test_paused_namespace_hands_out_nothing_until_resumed(shim_queue):
    """Pause stops claims; resume wakes a blocked claimer with the waiting task."""
    shim_queue.add(Task(id="a"))
    shim_queue.pause()
    assert shim_queue.is_paused()
    assert shim_queue.claim(["code"]) == []
    result = []
    claimer = threading.Thread(target=lambda: result.extend(shim_queue.claim(["code"], block=30)))
    claimer.start()
    shim_queue.resume()
    claimer.join(timeout=30)
    assert [c.task.id for c in result] == ["a"]
    assert not shim_queue.is_paused()


def test_concurrent_claimers_never_share_a_task(shim_queue):
    """Four threads claiming 400 tasks together get each task exactly once."""
    shim_queue.add_many([Task(id=f"t{i}") for i in range(400)])
    seen: list[str] = []
    lock = threading.Lock()

    def drain() -> None:
        while batch := shim_queue.claim(["code"], count=3):
            with lock:
                seen.extend(c.task.id for c in batch)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(seen) == sorted(f"t{i}" for i in range(400))


def test_a_corrupt_task_fails_alone_and_the_batch_still_runs(shim_queue):
    """A claim of several tasks with one corrupt hash: the corrupt one is failed for good with
    the reason, the others are claimed as usual."""
    shim_queue.add_many([Task(id="a"), Task(id="bad"), Task(id="c")])
    shim_queue.client.hset(shim_queue.keys.task("bad"), "params", "{not json")
    claims = shim_queue.claim(["code"], worker_id="w1", count=5)
    assert [c.task.id for c in claims] == ["a", "c"]
    status, result = shim_queue.client.hmget(shim_queue.keys.task("bad"), "status", "result")
    assert status == "failed"
    assert json.loads(result)["error"].startswith("corrupt task data: params (not JSON")


def test_a_type_named_twice_offers_each_task_once(shim_queue):
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    claims = shim_queue.claim(["code", "code"], count=2)
    assert sorted(c.task.id for c in claims) == ["a", "b"]
    assert len({c.token for c in claims}) == 2


def test_an_id_without_its_task_is_dropped_from_the_queue(shim_queue):
    """A ready entry whose task hash is gone (deleted by hand) is skipped and removed."""
    shim_queue.add(Task(id="a"))
    shim_queue.client.zadd(shim_queue.keys.ready("code"), {"ghost": 0})
    assert [c.task.id for c in shim_queue.claim(["code"], count=5)] == ["a"]
    assert shim_queue.client.zscore(shim_queue.keys.ready("code"), "ghost") is None


def test_a_script_that_fails_midway_keeps_its_bookkeeping(shim_queue):
    """Redis keeps the writes of a script that raised; the counts and sets gathered for the
    end of the script are written too, so the invariants hold."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    (claim,) = shim_queue.claim(["code"], worker_id="w1")
    keys = [
        shim_queue.keys.active,
        shim_queue.keys.delayed,
        shim_queue.keys.paused,
        shim_queue.keys.task("a"),
        shim_queue.keys.ready("code"),
    ]
    # Two completions announced, one given: the second raises after the first was recorded.
    args = [
        shim_queue.keys.prefix,
        "w1",
        0,
        30000,
        "1",
        "1",
        2,
        "a",
        claim.token,
        '{"success":true}',
        "",
    ]
    with pytest.raises(redis.ResponseError):
        shim_queue.scripts.call("complete_claim", keys, args)
    assert shim_queue.stats().by_type == {"code": {"pending": 1, "complete": 1}}
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


@pytest.mark.shim_real_redis
@pytest.mark.parametrize("forget", ["script_flush", "function_flush"])
def test_a_blocked_claimer_wakes_to_its_task_even_if_redis_forgot_the_script(shim_queue, forget):
    """The wait and the claim go in one write; if the script or the function library is gone
    (SCRIPT / FUNCTION FLUSH, as after a restart) when the wait ends, the claim is made again
    and the task still arrives."""
    if forget == "function_flush":  # the scripts as a function library (opt-in)
        settings = attrs.evolve(shim_queue.settings, redis_functions=True)
        shim_queue = TaskQueue(shim_queue.connection, settings)
        shim_queue.add_many([Task(id="warm1", type="other")])  # the next call loads it
        shim_queue.add_many([Task(id="warm2", type="other")])
        assert shim_queue.scripts.functions()
    got = []
    claimer = threading.Thread(
        target=lambda: got.extend(shim_queue.claim(["code"], worker_id="w1", block=10.0))
    )
    claimer.start()
    client = shim_queue.client
    wait_until(lambda: any(c.get("cmd") == "bzpopmin" for c in client.client_list()))
    getattr(client, forget)()
    shim_queue.add(Task(id="a"))
    claimer.join(timeout=30)
    assert [c.task.id for c in got] == ["a"]


def test_fencing_tokens_never_repeat_even_when_the_counter_goes_back(shim_queue):
    """A promoted replica may hold a stale copy of the token counter (replication is
    asynchronous): tokens follow the server clock in microseconds, so the tokens issued after
    the counter went back are still above every token issued before."""
    shim_queue.add_many([Task(id=f"f{i}") for i in range(6)])
    before = [c.token for c in shim_queue.claim(["code"], count=3)]
    now_s, now_us = shim_queue.client.time()
    assert before == sorted(before)
    assert len(set(before)) == 3
    assert max(before) <= int(now_s) * 1_000_000 + int(now_us) + 3
    shim_queue.client.set(shim_queue.keys.fence, 5)  # the counter as an old replica had it
    after = [c.token for c in shim_queue.claim(["code"], count=3)]
    assert min(after) > max(before)
    assert max(after) < 2**53  # exact in Lua numbers, JSON and Python
