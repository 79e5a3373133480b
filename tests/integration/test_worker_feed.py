"""The worker's TaskFeed on a real Redis: completions recorded in batches, claims made ahead
only while tasks are short, an idle feed sleeping in Redis, and a worker whose threads really
run side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ConnectionFailed, ShimError, StaleLease
from shim_core.models import Claim, Task, TaskResult, TaskStatus
from shim_core.queue import PendingSettle, Settled, TaskQueue
from shim_core.scripts import ScriptLine
from shim_core.worker import Worker, WorkerConfig
from shim_core.worker import feed as feedmod
from shim_core.worker.feed import Completion, Finished, TaskFeed
from tests.helpers import wait_until
from tests.integration.test_worker_components import FnExecutor, plugins_with


class GatedQueue(TaskQueue):
    """A real queue whose settle calls wait for a gate and are recorded (batch sizes), and can
    be made to fail a number of times as if Redis were away. With ``line`` false the feed makes
    its calls at once (:meth:`TaskQueue.settle_line` is None, as on the embedded store or with
    ``wait_replicas``); else it writes them ahead of their replies."""

    def __init__(
        self, connection: RedisConnectionManager, settings: Settings, *, line: bool = True
    ) -> None:
        super().__init__(connection, settings)
        self.line = line
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self.batches: list[int] = []
        self.failures = 0
        self.claim_failures = 0

    def _gated(self, completions: Sequence[Any]) -> None:
        self.held.set()  # a call has reached the gate
        self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise ConnectionFailed("Redis is away (test)")
        self.batches.append(len(completions))

    def settle_line(self) -> ScriptLine | None:
        return super().settle_line() if self.line else None

    def send_settle(
        self, line: ScriptLine | None, completions: Sequence[Any], *args: Any, **kwargs: Any
    ) -> PendingSettle:
        if line is not None:  # else settle() is called
            self._gated(completions)
        return super().send_settle(line, completions, *args, **kwargs)

    def settle(self, completions: Sequence[Any], *args: Any, **kwargs: Any) -> Settled:
        self._gated(completions)
        return super().settle(completions, *args, **kwargs)

    def claim(self, types: Sequence[str], **kwargs: Any) -> list[Claim]:
        if self.claim_failures:
            self.claim_failures -= 1
            raise ConnectionFailed("Redis is away (test)")
        return super().claim(types, **kwargs)


@pytest.fixture(params=["line", "at once"])
def gated(
    request: pytest.FixtureRequest, shim_connection: RedisConnectionManager, shim_settings: Settings
) -> GatedQueue:
    return GatedQueue(shim_connection, shim_settings, line=request.param == "line")


@pytest.fixture
def feeds() -> Iterator[list[TaskFeed]]:
    made: list[TaskFeed] = []
    yield made
    for feed in made:
        feed.close(timeout=5)


@pytest.fixture
def held_claims_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims held ahead are not handed back for waiting too long (``HOLD_LIMIT``, 50 ms): in
    these tests the test thread is the executor, and a slow machine can keep it away from
    ``take()`` for longer than that (the claims would be dropped: no ``on_unwanted`` here)."""
    monkeypatch.setattr(feedmod, "HOLD_LIMIT", 3600.0)


def make_feed(queue: TaskQueue, feeds: list[TaskFeed], **options: Any) -> TaskFeed:
    options = {"concurrency": 1, "claim_block": 0.2, **options}
    feed = TaskFeed(queue, "w1", ["code"], **options)
    feeds.append(feed)
    feed.start()
    return feed


def completion(claim: Claim, outcomes: list[Any]) -> Completion:
    return Completion(claim, TaskResult(success=True), outcomes.append)


def take_late_task(
    feed: TaskFeed, queue: TaskQueue, ready: Callable[[], Any], *, timeout: float
) -> None:
    """A thread takes from ``feed`` before any task exists; once ``ready()`` holds, task
    ``late`` is added, and the thread must get it."""
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(feed.take()))
    thread.start()
    wait_until(ready)
    queue.add(Task(id="late"))
    thread.join(timeout)
    assert got
    assert got[0] is not None
    assert got[0].task.id == "late"


def test_completions_that_pile_up_are_recorded_in_one_call(
    gated: GatedQueue, feeds: list[TaskFeed]
) -> None:
    """While a call is under way, what finishes meanwhile waits and goes in the next call."""
    gated.add_many([Task(id=f"t{i}") for i in range(4)])
    feed = make_feed(gated, feeds, concurrency=4, prefetch=0)
    claims = [feed.take() for _ in range(4)]
    assert all(claims)
    assert claims[0] is not None
    gated.gate.clear()
    gated.held.clear()
    outcomes: list[Any] = []
    feed.hand_back(Finished(0.0, completion(claims[0], outcomes)))
    wait_until(gated.held.is_set)  # its call is under way (held at the gate)
    for claim in claims[1:]:
        assert claim is not None
        feed.hand_back(Finished(0.0, completion(claim, outcomes)))
    gated.gate.set()
    wait_until(lambda: len(outcomes) == 4)
    assert outcomes == [0, 0, 0, 0]
    assert gated.batches[-2:] == [1, 3]
    assert gated.stats().complete == 4


def test_a_busy_feed_claims_the_next_task_in_the_completions_call(
    gated: GatedQueue, feeds: list[TaskFeed]
) -> None:
    gated.add_many([Task(id=f"t{i}") for i in range(3)])
    feed = make_feed(gated, feeds, prefetch=0)
    outcomes: list[Any] = []
    first = feed.take()
    assert first is not None
    second = feed.take(Finished(0.01, completion(first, outcomes)))
    assert second is not None
    assert second.task.id == "t1"
    wait_until(lambda: outcomes == [0])
    # One call completed t0 and claimed t1: the claim rode on the completion.
    assert gated.batches[-1] == 1
    assert gated.get("t1").status is TaskStatus.RUNNING  # type: ignore[union-attr]


@pytest.mark.usefixtures("held_claims_stay")
def test_a_reply_no_thread_comes_back_for_is_read_by_the_link_thread(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    """A thread writes the call that records what it finished, then runs its next task; while
    that task runs long nobody else would read the reply: the link thread does, and the
    completion's outcome arrives without waiting for the task to end."""
    shim_queue.add_many([Task(id=f"t{i}") for i in range(10)])
    feed = make_feed(shim_queue, feeds, prefetch=5)
    readers: list[str] = []

    def done(outcome: int | ShimError) -> None:
        assert outcome == 0
        readers.append(threading.current_thread().name)

    claim = feed.take()
    for _ in range(3):
        assert claim is not None
        claim = feed.take(Finished(0.0001, Completion(claim, TaskResult(success=True), done)))
    assert claim is not None  # this thread now "runs" it, and does not come back
    wait_until(lambda: len(readers) == 3)
    assert readers[-1].startswith("shim-link")
    assert shim_queue.stats().complete == 3


@pytest.mark.shim_real_redis  # written-ahead calls need a line: no embedded store
def test_a_thread_waiting_for_work_reads_the_reply_of_a_call_another_thread_wrote(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    feeds: list[TaskFeed],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thread B takes the last claim and writes an exchange; thread A, coming back meanwhile
    with nothing to take, is woken when the call is written and reads its reply itself, not
    after the link thread's patience. (That patience, 5 ms, is raised to a minute: a slow
    machine may not run A that soon, and then the link thread would rightly step in. A that
    never read its reply would leave ``got["a"]`` unset.)"""
    monkeypatch.setattr(feedmod, "LINK_PATIENCE", 60.0)
    gated = GatedQueue(shim_connection, shim_settings)
    gated.add_many([Task(id=f"t{n}") for n in range(6)])
    readers: list[str] = []
    feed = make_feed(
        gated,
        feeds,
        concurrency=2,
        prefetch=0,
        on_claimed=lambda claims: readers.append(threading.current_thread().name),
    )
    first, second = feed.take(), feed.take()
    assert first is not None
    assert second is not None
    gated.gate.clear()
    got: dict[str, Claim | None] = {}

    def thread_b() -> None:
        got["b"] = feed.take(Finished(0.001, completion(first, [])))

    def thread_a() -> None:
        got["a"] = feed.take(Finished(0.001, completion(second, [])))

    b = threading.Thread(target=thread_b, name="B")
    b.start()
    wait_until(lambda: feed._on_line)  # B is writing (held at the gate)
    a = threading.Thread(target=thread_a, name="A")
    a.start()
    wait_until(lambda: feed._idle == 2)
    readers.clear()
    gated.gate.set()
    b.join(5)
    a.join(5)
    assert got["a"] is not None
    assert got["b"] is not None
    assert readers
    assert set(readers) <= {"A", "B"}  # never the link thread


@pytest.mark.usefixtures("held_claims_stay")
@pytest.mark.shim_real_redis  # written-ahead calls need a line: no embedded store
def test_a_second_exchange_goes_out_while_one_is_in_flight_once_it_is_worth_a_call(
    shim_connection: RedisConnectionManager, shim_settings: Settings, feeds: list[TaskFeed]
) -> None:
    """While Redis runs one exchange, what finishes meanwhile goes out in a second one (so
    Redis always has the next call), but only with enough completions to be worth a call,
    and never a third."""
    in_flight: list[tuple[int, int]] = []  # (exchanges in flight before this one, completions)

    class Watched(TaskQueue):
        def send_settle(
            self, line: ScriptLine | None, completions: Sequence[Any], *args: Any, **kw: Any
        ) -> PendingSettle:
            in_flight.append((len(feed._pending), len(completions)))
            return super().send_settle(line, completions, *args, **kw)

    queue = Watched(shim_connection, shim_settings)
    queue.add_many([Task(id=f"t{n}") for n in range(400)])
    feed = make_feed(queue, feeds, prefetch=64)
    outcomes: list[Any] = []
    claim = feed.take()
    for _ in range(399):
        assert claim is not None
        claim = feed.take(Finished(0.0001, completion(claim, outcomes)))
    assert claim is not None
    feed.hand_back(Finished(0.0001, completion(claim, outcomes)))
    wait_until(lambda: len(outcomes) == 400)
    assert queue.stats().complete == 400
    assert max(n for n, _ in in_flight) == feedmod.DEPTH - 1
    seconds = [done for n, done in in_flight if n == 1]
    assert seconds
    assert min(seconds) >= feedmod._SECOND_MIN


@pytest.mark.usefixtures("held_claims_stay")
def test_prefetch_holds_work_only_while_tasks_are_short(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    shim_queue.add_many([Task(id=f"t{i:03}") for i in range(200)])
    feed = make_feed(shim_queue, feeds, prefetch=10)
    claim = feed.take()
    outcomes: list[Any] = []
    for _ in range(5):  # short tasks: the feed claims ahead, at most `prefetch`
        assert claim is not None
        claim = feed.take(Finished(0.0001, completion(claim, outcomes)))
    wait_until(lambda: feed.in_hand() >= 5)
    assert feed.in_hand() <= 10
    for _ in range(40):  # long tasks (a second each): nothing more is claimed ahead
        assert claim is not None
        claim = feed.take(Finished(1.0, completion(claim, outcomes)))
    wait_until(lambda: len(outcomes) == 45)
    assert feed.in_hand() == 0
    assert shim_queue.stats().active == 1  # only the task in the thread's hands


def test_an_idle_feed_sleeps_in_redis_and_wakes_for_new_work(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    feed = make_feed(shim_queue, feeds, claim_block=5.0)
    take_late_task(
        feed,
        shim_queue,
        lambda: feed._starving,  # the queue was empty: the waiter blocks in Redis
        timeout=10,
    )


def test_a_refused_completion_does_not_stop_the_others(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    feed = make_feed(shim_queue, feeds, concurrency=2, prefetch=0)
    a, b = feed.take(), feed.take()
    assert a is not None
    assert b is not None
    stale = Claim(task=a.task, token=a.token + 1000)
    outcomes: list[Any] = []
    feed.hand_back(Finished(0.0, completion(stale, outcomes)))
    feed.hand_back(Finished(0.0, completion(b, outcomes)))
    wait_until(lambda: len(outcomes) == 2)
    refused = [o for o in outcomes if isinstance(o, ShimError)]
    assert len(refused) == 1
    assert isinstance(refused[0], StaleLease)
    assert shim_queue.get("b").status is TaskStatus.COMPLETE  # type: ignore[union-attr]


def test_completions_wait_out_a_redis_outage(gated: GatedQueue, feeds: list[TaskFeed]) -> None:
    gated.add(Task(id="a"))
    feed = make_feed(gated, feeds, prefetch=0)
    claim = feed.take()
    assert claim is not None
    gated.failures = 2
    outcomes: list[Any] = []
    feed.hand_back(Finished(0.0, completion(claim, outcomes)))
    wait_until(lambda: outcomes == [0])
    assert gated.get("a").status is TaskStatus.COMPLETE  # type: ignore[union-attr]


def test_a_claim_that_failed_is_tried_again(gated: GatedQueue, feeds: list[TaskFeed]) -> None:
    """Redis away when an idle thread claims, nothing to record: the claim is retried after a
    pause (by the link thread) and the thread gets its task."""
    gated.add(Task(id="a"))
    gated.failures = 2
    feed = make_feed(gated, feeds, prefetch=0)
    claim = feed.take()
    assert claim is not None
    assert claim.task.id == "a"


def test_a_thread_waiting_in_redis_outlives_an_outage(
    gated: GatedQueue, feeds: list[TaskFeed]
) -> None:
    """The blocking claim of an idle thread fails twice (Redis away), is tried again after a
    pause, and the thread gets the task that arrives."""
    feed = make_feed(gated, feeds, claim_block=0.2)
    gated.claim_failures = 2
    take_late_task(feed, gated, lambda: gated.claim_failures == 0, timeout=20)


def test_a_worker_drops_claims_in_hand_whose_lease_is_lost(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A lease lost while its task waits in the inbox (taken back by the reaper or cancelled):
    the claim is dropped and the heartbeat stops renewing it."""
    queue = TaskQueue(shim_connection, shim_settings)
    queue.add(Task(id="a"))
    worker = Worker(
        shim_connection,
        shim_settings,
        WorkerConfig(worker_id="rt-lost", allow={"all"}),
        plugins=plugins_with(FnExecutor("w", ("code",))),
    )
    (claim,) = queue.claim(["code"], worker_id="rt-lost")
    worker.feed._inbox.append(claim)
    worker._claimed([claim])
    assert worker.reporter.held_leases() == {"a": claim.token}
    worker._leases_lost(["a", "not-held"])
    assert worker.feed.in_hand() == 0
    assert worker.reporter.held_leases() == {}


def test_a_closing_feed_gives_up_on_redis_that_stays_away(
    gated: GatedQueue, feeds: list[TaskFeed]
) -> None:
    gated.add(Task(id="a"))
    feed = make_feed(gated, feeds, prefetch=0)
    claim = feed.take()
    assert claim is not None
    gated.failures = 1000
    outcomes: list[Any] = []
    feed.hand_back(Finished(0.0, completion(claim, outcomes)))
    feed.close(timeout=30)
    assert outcomes == []  # never recorded: the lease expires and the task runs again
    assert gated.get("a").status is TaskStatus.RUNNING  # type: ignore[union-attr]


def prefetching(queue: TaskQueue, feeds: list[TaskFeed]) -> TaskFeed:
    """A feed that ran a few short tasks and holds more claimed ahead (t0-t3 were taken)."""
    queue.add_many([Task(id=f"t{i}") for i in range(30)])
    feed = make_feed(queue, feeds, prefetch=20)
    claim = feed.take()
    outcomes: list[Any] = []
    for _ in range(3):
        assert claim is not None
        claim = feed.take(Finished(0.0001, completion(claim, outcomes)))
    wait_until(lambda: feed.in_hand() > 1)
    return feed


@pytest.mark.usefixtures("held_claims_stay")
def test_shut_hands_back_the_claims_no_thread_took(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    feed = prefetching(shim_queue, feeds)
    feed.stop_claiming()
    left = feed.shut()
    assert left
    assert feed.in_hand() == 0
    assert feed.take() is None
    assert {c.task.id for c in left}.isdisjoint({"t0", "t1", "t2", "t3"})


@pytest.mark.usefixtures("held_claims_stay")
def test_discard_drops_claims_whose_lease_is_gone(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    feed = prefetching(shim_queue, feeds)
    feed.stop_claiming()
    wait_until(lambda: not feed._claiming)
    held = list(feed._inbox)
    gone = feed.discard([held[0].task.id, "unknown"])
    assert gone == [held[0].task.id]
    assert [c.task.id for c in feed._inbox] == [c.task.id for c in held[1:]]


def test_a_worker_runs_its_threads_side_by_side(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """With --concurrency 10, ten tasks run at once: each waits at a barrier of ten, which
    breaks (failing the task) unless all ten are running together."""
    barrier = threading.Barrier(10, timeout=20)

    def meet(task: Task, ctx: Any) -> TaskResult:
        barrier.wait()
        return TaskResult(success=True)

    queue = TaskQueue(shim_connection, shim_settings)
    queue.add_many([Task(id=f"t{i}") for i in range(10)])
    worker = Worker(
        shim_connection,
        shim_settings,
        WorkerConfig(worker_id="rt-feed", concurrency=10, claim_block=0.2, allow={"all"}),
        plugins=plugins_with(FnExecutor("w", ("code",), meet)),
    )
    worker.start()
    try:
        wait_until(lambda: queue.stats().complete == 10, timeout=30)
    finally:
        worker.stop(grace=1)
    assert not barrier.broken


def test_claims_that_arrive_after_the_grace_period_are_handed_back(
    shim_queue: TaskQueue, feeds: list[TaskFeed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread still waiting in Redis when the worker's grace period ends (the wake-up that
    ends its wait did not get through): what it claims then is handed back (released), not
    left leased to a worker that is leaving."""
    unwanted: list[str] = []
    feed = TaskFeed(
        shim_queue,
        "w1",
        ["code"],
        claim_block=5.0,
        on_unwanted=lambda claim: unwanted.append(claim.task.id),
    )
    feeds.append(feed)
    monkeypatch.setattr(feed, "_end_blocking_claim", lambda: None)  # the wait is not ended
    feed.start()
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(feed.take()))
    thread.start()
    wait_until(lambda: feed._starving and feed._claiming)  # waiting in Redis
    feed.stop_claiming()
    assert feed.shut() == []
    shim_queue.add(Task(id="late"))
    thread.join(20)
    assert got == [None]
    assert unwanted == ["late"]


def test_a_wake_up_that_fails_leaves_the_wait_to_its_claim_block(
    shim_queue: TaskQueue, feeds: list[TaskFeed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis away when the feed stops claiming: stop_claiming() does not raise, and the thread
    waiting in Redis comes back at the end of its claim block."""

    def away(worker_id: str) -> None:
        raise ConnectionFailed("Redis is away (test)")

    monkeypatch.setattr(shim_queue, "wake_worker", away)
    feed = make_feed(shim_queue, feeds, claim_block=0.3)
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(feed.take()))
    thread.start()
    wait_until(lambda: feed._starving and feed._claiming)

    feed.stop_claiming()
    thread.join(20)

    assert got == [None]


def test_no_wake_up_is_sent_while_redis_is_known_to_be_away(
    shim_queue: TaskQueue, feeds: list[TaskFeed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop during an outage does not wait for the client's retries of a wake-up: the thread
    waiting in Redis ends with its claim block (or its failure)."""
    woken: list[str] = []
    monkeypatch.setattr(shim_queue, "wake_worker", woken.append)
    feed = make_feed(shim_queue, feeds, claim_block=0.3)
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(feed.take()))
    thread.start()
    wait_until(lambda: feed._starving and feed._claiming)
    feed.outage.failed("claiming", ConnectionFailed("Redis is away (test)"))

    feed.stop_claiming()
    thread.join(20)

    assert got == [None]
    assert woken == []


def test_claims_held_behind_a_long_task_go_back_to_the_queue(
    shim_queue: TaskQueue, feeds: list[TaskFeed]
) -> None:
    """Short tasks made the feed claim ahead; then a task runs long: the claims waiting behind
    it are handed back for other workers, and nothing more is claimed ahead."""
    shim_queue.add_many([Task(id=f"t{i:02}") for i in range(40)])
    unwanted: list[Claim] = []

    def give_back(claim: Claim) -> None:
        shim_queue.release(claim.task.id, claim.token)
        unwanted.append(claim)

    feed = TaskFeed(shim_queue, "w1", ["code"], prefetch=10, claim_block=0.2, on_unwanted=give_back)
    feeds.append(feed)
    feed.start()
    claim = feed.take()
    outcomes: list[Any] = []
    for _ in range(5):  # short tasks: claims are held ahead
        assert claim is not None
        claim = feed.take(Finished(0.0001, completion(claim, outcomes)))
    # The thread now runs `claim` for long: it does not come back.
    wait_until(lambda: unwanted and feed.in_hand() == 0, timeout=10)
    # Handed back one release at a time: then only the long task is leased.
    wait_until(lambda: shim_queue.stats().active == 1, timeout=10)
    assert shim_queue.stats().pending == 40 - 6
    assert feed._prefetch() == 0
