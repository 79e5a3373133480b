"""The worker components on a real Redis: TaskClaimer, WorkExecutor, ProgressReporter,
WorkerCrashRecovery and the Worker runtime (thread mode, in-process)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from shim_core import queue as queue_module
from shim_core.bus import MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.contracts import Checkpoint
from shim_core.hookspecs import hookimpl
from shim_core.models import (
    Claim,
    EventType,
    ProgressEvent,
    Task,
    TaskResult,
    TaskStatus,
    WorkerCapabilities,
    WorkerRegistration,
    WorkerStatus,
)
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import HeartbeatRefused, WorkerRegistry
from shim_core.worker import (
    ProgressReporter,
    TaskClaimer,
    TaskExecution,
    Worker,
    WorkerConfig,
    WorkerCrashRecovery,
    WorkExecutor,
)
from tests.helpers import wait_until


# ----------------------------------------------------------------- test doubles
@attrs.define
class FnExecutor:
    """An executor running ``fn(task, ctx)``; records every context it was given."""

    name: str
    task_types: tuple[str, ...] = ()
    fn: Callable[[Task, Any], Any] = lambda task, ctx: TaskResult(success=True)
    contexts: list[Any] = attrs.Factory(list)

    def execute(self, task: Task, ctx: Any) -> Any:
        self.contexts.append(ctx)
        return self.fn(task, ctx)


class MemoryBackend:
    """Checkpoints in a list (a CheckpointBackend)."""

    name = "memory"

    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []
        self._lock = threading.Lock()

    def save(self, checkpoint: Checkpoint) -> str:
        with self._lock:
            self.saved.append(checkpoint)
        return checkpoint.id

    def latest(self, task_id: str) -> Checkpoint | None:
        with self._lock:
            return next((c for c in reversed(self.saved) if c.task_id == task_id), None)

    def for_session(self, session_id: str) -> list[Checkpoint]:
        with self._lock:
            return [c for c in self.saved if c.session_id == session_id]

    def delete(self, task_id: str) -> int:
        with self._lock:
            before = len(self.saved)
            self.saved = [c for c in self.saved if c.task_id != task_id]
            return before - len(self.saved)


@attrs.define
class MemoryBackendFactory:
    backend: MemoryBackend = attrs.Factory(MemoryBackend)
    name: str = "memory"

    def create(self, connection: Any, settings: Any) -> MemoryBackend:
        return self.backend


class TestPlugin:
    """A plugin object handing SHIM the executors and backends of one test."""

    __test__ = False  # not a test class

    def __init__(self, executors: list[Any], backends: list[Any] = ()) -> None:  # type: ignore[assignment]
        self.executors = executors
        self.backends = list(backends)

    @hookimpl
    def shim_executors(self) -> list[Any]:
        return self.executors

    @hookimpl
    def shim_checkpoint_backends(self) -> list[Any]:
        return self.backends


def plugins_with(*executors: Any, backends: list[Any] = ()) -> Plugins:  # type: ignore[assignment]
    plugins = Plugins(entry_points=False, extra=[TestPlugin(list(executors), list(backends))])
    assert plugins.errors == []
    return plugins


def succeed(task: Task, ctx: Any) -> TaskResult:
    return TaskResult(success=True, output=task.id)


# --------------------------------------------------------------------- fixtures
@pytest.fixture
def registry(shim_connection: RedisConnectionManager, shim_settings: Settings) -> WorkerRegistry:
    return WorkerRegistry(shim_connection, shim_settings)


@pytest.fixture
def store(shim_queue: TaskQueue) -> CheckpointStore:
    return CheckpointStore(MemoryBackend(), shim_queue)


def register(registry: WorkerRegistry, worker_id: str, interval: float = 60.0) -> None:
    registry.register_worker(WorkerRegistration(id=worker_id), heartbeat_interval=interval)


def claim_as(queue: TaskQueue, worker_id: str, *types: str, **kwargs: Any) -> Claim:
    claims = queue.claim(list(types or ("code",)), worker_id=worker_id, **kwargs)
    assert len(claims) == 1
    return claims[0]


def run(wx: WorkExecutor, claim: Claim) -> tuple[TaskExecution, Any]:
    """Prepare and execute one claim; returns the execution context and the outcome."""
    execution = wx.prepare(claim)
    try:
        return execution, wx.execute_task(execution)
    finally:
        execution.close()


# ================================================================== TaskClaimer
def make_claimer(queue: TaskQueue, worker_id: str = "w1", *types: str) -> TaskClaimer:
    caps = WorkerCapabilities(supported_task_types=types or ("code",))
    claimer = TaskClaimer(queue, worker_id, caps)
    claimer.start()
    return claimer


def test_claimer_claims_a_single_task(shim_queue: TaskQueue) -> None:
    """claim_next leases one pending task to the worker and counts it."""
    shim_queue.add(Task(id="a"))
    claimer = make_claimer(shim_queue)

    claim = claimer.claim_next()

    assert claim is not None
    assert claim.task.id == "a"
    assert claim.task.worker_id == "w1"
    assert shim_queue.get("a").status is TaskStatus.RUNNING
    assert claimer.get_claim_count() == 1


def test_claimer_on_an_empty_queue_returns_none(shim_queue: TaskQueue) -> None:
    """With nothing to claim, claim_next returns None at once, or after blocking briefly."""
    claimer = make_claimer(shim_queue)
    assert claimer.claim_next() is None
    assert claimer.claim_next(block=0.05) is None
    assert claimer.get_claim_count() == 0


def test_claimer_blocking_claim_wakes_for_new_work(shim_queue: TaskQueue) -> None:
    """A blocked claim returns the task added while it waits."""
    claimer = make_claimer(shim_queue)
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(claimer.claim_next(block=5.0)))
    thread.start()
    shim_queue.add(Task(id="late"))
    thread.join(timeout=10)
    assert [c.task.id for c in got if c] == ["late"]


def test_claimer_filters_by_capabilities(shim_queue: TaskQueue) -> None:
    """A claimer takes only the types it supports and the tasks assigned to its worker."""
    shim_queue.add_many(
        [
            Task(id="code-1", type="code"),
            Task(id="doc-1", type="document"),
            Task(id="test-1", type="test"),
            Task(id="mine", type="document", assigned_to="w1"),
            Task(id="theirs", type="code", assigned_to="w2"),
        ]
    )
    claimer = make_claimer(shim_queue, "w1", "code", "test")

    claims = claimer.claim_batch(10)

    assert sorted(c.task.id for c in claims) == ["code-1", "mine", "test-1"]
    assert shim_queue.get("doc-1").status is TaskStatus.PENDING
    assert shim_queue.get("theirs").status is TaskStatus.PENDING
    assert claimer.get_claim_count() == 3


def test_concurrent_claimers_never_share_a_task(shim_queue: TaskQueue) -> None:
    """Eight claimers racing over 200 tasks claim every task exactly once."""
    shim_queue.add_many([Task(id=f"t{i:03d}") for i in range(200)])
    claimers = [make_claimer(shim_queue, f"w{i}") for i in range(8)]
    got: dict[str, list[str]] = {c.worker_id: [] for c in claimers}
    start = threading.Barrier(len(claimers))

    def drain(claimer: TaskClaimer) -> None:
        start.wait(timeout=10)
        while batch := claimer.claim_batch(3):
            got[claimer.worker_id] += [c.task.id for c in batch]

    threads = [threading.Thread(target=drain, args=(c,)) for c in claimers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    claimed = [t for ids in got.values() for t in ids]
    assert len(claimed) == 200
    assert sorted(set(claimed)) == sorted(claimed)
    assert sum(c.get_claim_count() for c in claimers) == 200
    assert shim_queue.stats().active == 200


def test_stopped_claimer_claims_nothing(shim_queue: TaskQueue) -> None:
    """After stop() claim_batch returns [] and leaves the tasks pending; start() resumes."""
    shim_queue.add(Task(id="a"))
    claimer = make_claimer(shim_queue)

    claimer.stop()

    assert not claimer.is_active()
    assert claimer.claim_batch(5) == []
    assert claimer.claim_next(block=1.0) is None
    assert shim_queue.get("a").status is TaskStatus.PENDING
    claimer.start()
    assert claimer.claim_next().task.id == "a"
    assert claimer.get_claim_count() == 1


def test_claimer_lease_ms_is_used(shim_queue: TaskQueue) -> None:
    """A claimer's lease_ms sets the lease of the tasks it claims."""
    shim_queue.add(Task(id="a"))
    claimer = TaskClaimer(shim_queue, "w1", WorkerCapabilities(), lease_ms=1)
    claimer.start()
    claimer.claim_next()
    wait_until(lambda: shim_queue.reap_stalled() == {"a": TaskStatus.PENDING})


# ================================================================= WorkExecutor
def test_executor_runs_the_named_executor_and_the_type_mapping(
    shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """A task runs through the executor it names, else the executor declaring its type."""

    def by(name: str) -> FnExecutor:
        return FnExecutor(name, fn=lambda task, ctx: TaskResult(success=True, output=name))

    coder, tester, researcher = by("coder"), by("tester"), by("researcher")
    coder.task_types, tester.task_types, researcher.task_types = ("code",), ("test",), ("research",)
    wx = WorkExecutor(shim_queue, plugins_with(coder, tester, researcher), store, worker_id="w1")
    shim_queue.add_many(
        [
            Task(id="c", type="code"),
            Task(id="t", type="test"),
            Task(id="r", type="research"),
            Task(id="named", type="code", executor="tester"),
        ]
    )

    for _ in range(4):
        _, outcome = run(wx, claim_as(shim_queue, "w1", "code", "test", "research"))
        assert outcome.status == "complete"

    outputs = {tid: shim_queue.get(tid).result.output for tid in ("c", "t", "r", "named")}
    assert outputs == {"c": "coder", "t": "tester", "r": "researcher", "named": "tester"}
    assert all(shim_queue.get(t).status is TaskStatus.COMPLETE for t in outputs)


def test_executor_uses_the_default_executor(shim_queue: TaskQueue) -> None:
    """A task whose type no executor declares runs through the default executor."""
    fallback = FnExecutor("fallback", fn=succeed)
    wx = WorkExecutor(
        shim_queue, plugins_with(fallback), None, worker_id="w1", default_executor="fallback"
    )
    shim_queue.add(Task(id="d", type="document"))

    _, outcome = run(wx, claim_as(shim_queue, "w1", "document"))

    assert (outcome.status, outcome.result.output) == ("complete", "d")
    assert outcome.result.duration_ms is not None


def test_bare_return_value_is_a_successful_output(shim_queue: TaskQueue) -> None:
    """An executor returning a plain value completes the task with that value as output."""
    wx = WorkExecutor(
        shim_queue,
        plugins_with(FnExecutor("bare", ("code",), lambda task, ctx: {"n": 3})),
        None,
        worker_id="w1",
    )
    shim_queue.add(Task(id="a"))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "complete"
    assert shim_queue.get("a").result.output == {"n": 3}


def test_progress_reaches_the_task_and_the_bus(shim_queue: TaskQueue, shim_bus: MessageBus) -> None:
    """ctx.progress is stored on the task (fraction and message) and published as
    task:progress."""
    events: list[ProgressEvent] = []
    shim_bus.subscribe("task:progress", lambda event, channel: events.append(event))
    wait_until(lambda: shim_bus.subscriber_count("task:progress") == 1)
    go_on = threading.Event()

    def work(task: Task, ctx: Any) -> TaskResult:
        ctx.progress(0.5, "half way")
        go_on.wait(10)
        return TaskResult(success=True)

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("p", ("code",), work)), None, worker_id="w1"
    )
    shim_queue.add(Task(id="a"))
    claim = claim_as(shim_queue, "w1")
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(run(wx, claim)[1]))
    thread.start()
    try:
        task = wait_until(lambda: (t := shim_queue.get("a")).progress == 0.5 and t)
        assert task.progress_message == "half way"
        assert task.status is TaskStatus.RUNNING
        event = wait_until(lambda: next(iter(events), None))
    finally:
        go_on.set()
        thread.join(timeout=10)

    assert (event.type, event.task_id, event.worker_id) == (EventType.PROGRESS, "a", "w1")
    assert (event.progress.percentage, event.progress.message) == (0.5, "half way")
    assert event.progress.current == 50
    assert done[0].status == "complete"


def test_executor_raising_is_retried_with_the_error(shim_queue: TaskQueue) -> None:
    """An executor that raises fails the attempt; the task retries with the error text."""

    def boom(task: Task, ctx: Any) -> None:
        raise ValueError("boom")

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("x", ("code",), boom)), None, worker_id="w1"
    )
    shim_queue.add(Task(id="a", max_attempts=3))

    _execution, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "retrying"
    assert outcome.result.error == "ValueError: boom"
    task = shim_queue.get("a")
    assert task.status is TaskStatus.RETRYING
    assert task.result.error == "ValueError: boom"
    log = shim_queue.client.lrange(shim_queue.keys.log("a"), 0, -1)
    assert any("raised" in line for line in log)
    assert any("ValueError" in line for line in log)


def test_unsuccessful_result_is_retried(shim_queue: TaskQueue) -> None:
    """An executor returning TaskResult(success=False) fails the attempt without a traceback."""
    wx = WorkExecutor(
        shim_queue,
        plugins_with(
            FnExecutor("x", ("code",), lambda t, c: TaskResult(success=False, error="nope"))
        ),
        None,
        worker_id="w1",
    )
    shim_queue.add(Task(id="a", max_attempts=2))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "retrying"
    task = shim_queue.get("a")
    assert (task.status, task.result.error) == (TaskStatus.RETRYING, "nope")


def test_last_failed_attempt_fails_the_task(shim_queue: TaskQueue) -> None:
    """A failed attempt with no attempt left fails the task for good."""
    wx = WorkExecutor(
        shim_queue,
        plugins_with(
            FnExecutor("x", ("code",), lambda t, c: TaskResult(success=False, error="nope"))
        ),
        None,
        worker_id="w1",
    )
    shim_queue.add(Task(id="a", max_attempts=1))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "failed"
    assert shim_queue.get("a").status is TaskStatus.FAILED


def test_missing_executor_fails_the_attempt(shim_queue: TaskQueue) -> None:
    """A task naming an executor the worker lacks, or of a type no executor runs, fails the
    attempt with an error saying so (retried, so another worker of a mixed fleet may run it)."""
    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("coder", ("code",))), None, worker_id="w1"
    )
    shim_queue.add_many(
        [Task(id="named", executor="missing", max_attempts=3), Task(id="typed", type="document")]
    )

    _, named = run(wx, claim_as(shim_queue, "w1", "code"))
    _, typed = run(wx, claim_as(shim_queue, "w1", "document"))

    assert (named.status, typed.status) == ("retrying", "retrying")
    task = shim_queue.get("named")
    assert task.status is TaskStatus.RETRYING
    assert task.attempts == 1
    assert task.result.error == "no executor missing on worker w1"
    assert shim_queue.get("typed").result.error == (
        "no executor one for type 'document' on worker w1"
    )


def test_timeout_cancels_the_execution(shim_queue: TaskQueue) -> None:
    """A task over its timeout_ms has its context cancelled and the attempt fails as timed out."""

    def slow(task: Task, ctx: Any) -> TaskResult:
        ctx.cancelled.wait(10)
        return TaskResult(success=True, output="partial")

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("slow", ("code",), slow)), None, worker_id="w1"
    )
    shim_queue.add(Task(id="a", timeout_ms=100, max_attempts=3))

    execution, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "retrying"
    assert execution.cancelled.is_set()
    assert "timed out" in outcome.result.error
    assert outcome.duration_ms < 5_000
    task = shim_queue.get("a")
    assert task.status is TaskStatus.RETRYING
    assert "timed out" in task.result.error
    assert task.result.output == "partial"


def test_worker_time_limit_applies_without_a_task_timeout(shim_queue: TaskQueue) -> None:
    """The executor's max_task_duration_ms bounds a task that sets no timeout of its own."""

    def slow(task: Task, ctx: Any) -> TaskResult:
        ctx.cancelled.wait(10)
        return TaskResult(success=True)

    wx = WorkExecutor(
        shim_queue,
        plugins_with(FnExecutor("slow", ("code",), slow)),
        None,
        worker_id="w1",
        max_task_duration_ms=100,
    )
    shim_queue.add(Task(id="a", max_attempts=1))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "failed"
    assert "timed out" in shim_queue.get("a").result.error


def checkpoint_stores(shim_queue: TaskQueue, shim_connection, shim_settings) -> dict[str, Any]:
    found: dict[str, Any] = {"memory": CheckpointStore(MemoryBackend(), shim_queue)}
    factory = Plugins().backends.get("redis")
    if factory is not None:
        found["redis"] = CheckpointStore(factory.create(shim_connection, shim_settings), shim_queue)
    return found


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_checkpoints_during_a_long_task(
    backend: str, shim_queue: TaskQueue, shim_connection, shim_settings
) -> None:
    """Checkpoints saved through the context are stored and the newest is latest()."""
    stores = checkpoint_stores(shim_queue, shim_connection, shim_settings)
    if backend not in stores:
        pytest.skip(f"no {backend!r} checkpoint backend registered")
    store = stores[backend]
    ids: list[str] = []

    def long(task: Task, ctx: Any) -> TaskResult:
        for step in range(1, 4):
            ids.append(ctx.checkpoint({"step": step}, progress=step / 4))
        return TaskResult(success=True)

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("long", ("code",), long)), store, worker_id="w1"
    )
    shim_queue.add(Task(id="a"))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "complete"
    assert all(ids)
    assert len(set(ids)) == 3
    latest = store.latest("a")
    assert latest is not None
    assert (latest.id, latest.state, latest.progress, latest.attempt) == (
        ids[-1],
        {"step": 3},
        0.75,
        1,
    )


def test_checkpoint_from_a_lost_lease_is_refused(
    shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """A checkpoint after the lease was lost is not saved and cancels the execution."""
    results: list[str] = []

    def late(task: Task, ctx: Any) -> TaskResult:
        time.sleep(0.01)  # let the 1 ms lease expire
        assert shim_queue.reap_stalled() == {"a": TaskStatus.PENDING}
        results.append(ctx.checkpoint({"step": 1}))
        return TaskResult(success=True)

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("late", ("code",), late)), store, worker_id="w1"
    )
    shim_queue.add(Task(id="a"))

    execution, outcome = run(wx, claim_as(shim_queue, "w1", lease_ms=1))

    assert results == [""]
    assert store.latest("a") is None
    assert execution.cancelled.is_set()
    assert "lease lost" in execution.cancel_reason
    assert outcome.status == "fenced"


def test_an_execution_is_cancelled_once_with_the_first_reason(
    shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """``cancelled`` is made on first use, one event whichever thread asks first; of several
    cancellations at once, the first reason stays."""
    wx = WorkExecutor(shim_queue, plugins_with(), store, worker_id="w1")
    shim_queue.add(Task(id="a"))
    execution = wx.prepare(claim_as(shim_queue, "w1"))
    events: list[threading.Event] = []
    barrier = threading.Barrier(8)

    def look_and_cancel(n: int) -> None:
        barrier.wait()
        events.append(execution.cancelled)
        execution.cancel(f"reason {n}")

    threads = [threading.Thread(target=look_and_cancel, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(event) for event in events}) == 1
    assert events[0].is_set()
    assert execution.cancelled is events[0]
    assert execution.cancel_reason in {f"reason {n}" for n in range(8)}
    reason = execution.cancel_reason
    execution.cancel("later")
    assert execution.cancel_reason == reason


def test_dependency_results_are_passed_to_the_executor(
    shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """The results of a task's dependencies are in ctx.dependency_results, by task id."""
    recorder = FnExecutor("rec", ("code",), succeed)
    wx = WorkExecutor(shim_queue, plugins_with(recorder), store, worker_id="w1")
    shim_queue.add_many(
        [
            Task(id="dep1"),
            Task(id="dep2"),
            Task(id="child", dependencies=("dep1", "dep2")),
        ]
    )
    for _ in range(2):
        run(wx, claim_as(shim_queue, "w1"))

    run(wx, claim_as(shim_queue, "w1"))

    child_ctx = recorder.contexts[-1]
    assert child_ctx.task.id == "child"
    deps = dict(child_ctx.dependency_results)
    assert sorted(deps) == ["dep1", "dep2"]
    assert deps["dep1"] == shim_queue.get("dep1").result
    assert deps["dep1"].output == "dep1"
    assert recorder.contexts[0].dependency_results == {}


def test_second_attempt_resumes_from_the_latest_checkpoint(
    shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """Attempt 1 starts fresh and checkpoints; attempt 2 gets that state as resume_state."""
    seen: list[tuple[int, Any]] = []

    def flaky(task: Task, ctx: Any) -> TaskResult:
        seen.append((task.attempts, ctx.resume_state))
        if task.attempts == 1:
            ctx.checkpoint({"done": 2})
            ctx.checkpoint({"done": 3})
            raise RuntimeError("crashed half way")
        return TaskResult(success=True, output=ctx.resume_state["done"])

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("flaky", ("code",), flaky)), store, worker_id="w1"
    )
    shim_queue.add(Task(id="a", max_attempts=2, backoff_ms=0))

    assert run(wx, claim_as(shim_queue, "w1"))[1].status == "retrying"
    assert run(wx, claim_as(shim_queue, "w1"))[1].status == "complete"

    assert seen == [(1, None), (2, {"done": 3})]
    assert shim_queue.get("a").result.output == 3


def test_stale_result_is_fenced(shim_queue: TaskQueue, store: CheckpointStore) -> None:
    """A result reported after the lease was reaped is refused and reported as fenced."""
    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("ok", ("code",), succeed)), store, worker_id="w1"
    )
    shim_queue.add(Task(id="a"))
    claim = claim_as(shim_queue, "w1", lease_ms=1)
    execution = wx.prepare(claim)
    time.sleep(0.01)  # let the 1 ms lease expire
    assert shim_queue.reap_stalled() == {"a": TaskStatus.PENDING}

    outcome = wx.execute_task(execution)
    execution.close()

    assert outcome.status == "fenced"
    task = shim_queue.get("a")
    assert (task.status, task.result, task.stalls) == (TaskStatus.PENDING, None, 1)


class Opaque:
    """A value with no JSON form (e.g. a plugin's own result object)."""


def test_output_without_json_form_fails_the_attempt(shim_queue: TaskQueue) -> None:
    """An executor output that cannot be stored fails the attempt instead of escaping."""
    wx = WorkExecutor(
        shim_queue,
        plugins_with(
            FnExecutor("odd", ("code",), lambda t, c: TaskResult(success=True, output=Opaque()))
        ),
        None,
        worker_id="w1",
    )
    shim_queue.add(Task(id="a", max_attempts=2))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "retrying"
    assert "JSON" in shim_queue.get("a").result.error


def test_result_of_a_cancelled_task_is_reported_as_cancelled(shim_queue: TaskQueue) -> None:
    """A task cancelled while it runs ends with outcome 'cancelled', its result not recorded."""

    def work(task: Task, ctx: Any) -> TaskResult:
        shim_queue.cancel(task.id, "no longer needed")
        return TaskResult(success=True, output="late")

    wx = WorkExecutor(
        shim_queue, plugins_with(FnExecutor("w", ("code",), work)), None, worker_id="w1"
    )
    shim_queue.add(Task(id="a"))

    _, outcome = run(wx, claim_as(shim_queue, "w1"))

    assert outcome.status == "cancelled"
    assert shim_queue.get("a").status is TaskStatus.CANCELLED


# ============================================================= ProgressReporter
@pytest.fixture
def reporter_factory(registry: WorkerRegistry) -> Iterator[Callable[..., ProgressReporter]]:
    made: list[ProgressReporter] = []

    def make(worker_id: str = "w1", interval: float = 0.05, **kwargs: Any) -> ProgressReporter:
        reporter = ProgressReporter(registry, worker_id, interval, **kwargs)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.stop()


def test_reporter_start_and_stop(registry: WorkerRegistry, reporter_factory) -> None:
    """start() runs the heartbeat loop and stop() ends it."""
    register(registry, "w1")
    reporter = reporter_factory()
    assert not reporter.is_running()

    reporter.start()
    assert reporter.is_running()
    reporter.stop()

    assert not reporter.is_running()


def test_reporter_beats_on_its_interval(registry: WorkerRegistry, reporter_factory) -> None:
    """The loop beats repeatedly and the registry's last_seen advances."""
    register(registry, "w1")
    first_seen = registry.get_worker("w1").heartbeat.last_seen
    reporter = reporter_factory()

    reporter.start()

    wait_until(lambda: reporter.stats.heartbeats >= 3, timeout=5)
    wait_until(lambda: registry.get_worker("w1").heartbeat.last_seen > first_seen)
    assert reporter.stats.heartbeat_errors == 0
    assert registry.get_worker("w1").status is WorkerStatus.IDLE


def test_reporter_beats_report_busy_while_holding_a_lease(
    registry: WorkerRegistry, shim_queue: TaskQueue, reporter_factory
) -> None:
    """A beat with a held lease marks the worker busy and renews the lease."""
    register(registry, "w1")
    shim_queue.add(Task(id="a"))
    claim = claim_as(shim_queue, "w1", lease_ms=300)
    reporter = reporter_factory(lease_ms=60_000)
    reporter.report_task_start("a", claim.token)

    assert reporter.send_heartbeat() == []

    assert registry.get_worker("w1").status is WorkerStatus.BUSY
    first_deadline = shim_queue.get("a").lease_deadline
    assert first_deadline > claim.task.lease_deadline
    time.sleep(0.35)  # past the original 300 ms lease
    assert shim_queue.reap_stalled() == {}
    assert shim_queue.get("a").status is TaskStatus.RUNNING


def test_reporter_report_status(registry: WorkerRegistry, reporter_factory) -> None:
    """report_status sets the worker's status in the registry."""
    register(registry, "w1")
    reporter = reporter_factory()

    reporter.report_status(WorkerStatus.BUSY)
    assert registry.get_worker("w1").status is WorkerStatus.BUSY
    reporter.report_status(WorkerStatus.IDLE)
    assert registry.get_worker("w1").status is WorkerStatus.IDLE


def test_reporter_counts_finished_tasks(reporter_factory) -> None:
    """Task completions are counted locally by outcome, and their leases are dropped."""
    reporter = reporter_factory()
    for task_id, token in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        reporter.report_task_start(task_id, token)
    assert reporter.held_leases() == {"a": 1, "b": 2, "c": 3, "d": 4}

    reporter.report_task_complete("a", 100, "complete")
    reporter.report_task_complete("b", 200, "retrying")
    reporter.report_task_complete("c", 300, "failed")
    reporter.report_task_complete("d", 400, "fenced")

    stats = reporter.stats
    assert (stats.tasks_completed, stats.tasks_failed, stats.results_fenced) == (1, 2, 1)
    assert stats.total_duration_ms == 1000
    assert stats.avg_duration_ms == pytest.approx(1000 / 3)
    assert reporter.held_leases() == {}


def test_reporter_reports_lost_leases(
    registry: WorkerRegistry, shim_queue: TaskQueue, reporter_factory
) -> None:
    """A beat that finds a held lease lost passes its task id to on_lost."""
    register(registry, "w1")
    shim_queue.add_many([Task(id="kept"), Task(id="taken")])
    kept = claim_as(shim_queue, "w1")
    taken = claim_as(shim_queue, "w1")
    shim_queue.cancel("taken")
    lost_calls: list[list[str]] = []
    reporter = reporter_factory(on_lost=lost_calls.append)
    reporter.report_task_start("kept", kept.token)
    reporter.report_task_start("taken", taken.token)

    reporter.start()

    wait_until(lambda: lost_calls)
    assert lost_calls[0] == ["taken"]
    assert shim_queue.get("kept").status is TaskStatus.RUNNING


def test_reporter_reports_refusal_after_a_crash_declaration(
    registry: WorkerRegistry, shim_queue: TaskQueue, reporter_factory
) -> None:
    """Once the worker was declared crashed its beats are refused and on_refused is called."""
    register(registry, "w1")
    shim_queue.add(Task(id="a"))
    claim = claim_as(shim_queue, "w1")
    refusals: list[HeartbeatRefused] = []
    reporter = reporter_factory(on_refused=refusals.append)
    reporter.report_task_start("a", claim.token)
    registry.declare_crashed("w1")

    reporter.start()

    exc = wait_until(lambda: next(iter(refusals), None))
    assert (exc.worker_id, exc.crashed, exc.lost) == ("w1", True, ["a"])
    assert reporter.is_running()


@pytest.mark.shim_real_redis
def test_reporter_survives_a_redis_outage(shim_redis_server_factory) -> None:
    """While Redis is down beats fail and are counted, the loop keeps running, and beats
    succeed again once the server is back."""
    server = shim_redis_server_factory(appendonly=True)
    settings = Settings(redis_url=server.url, namespace="outage")
    connection = RedisConnectionManager(server.url, retries=0, connect_timeout=0.5)
    connection.connect()
    registry = WorkerRegistry(connection, settings)
    register(registry, "w1")
    refusals: list[HeartbeatRefused] = []
    reporter = ProgressReporter(registry, "w1", 0.05, on_refused=refusals.append)
    reporter.start()
    try:
        wait_until(lambda: reporter.stats.heartbeats >= 2, timeout=5)

        server.kill()
        errors = reporter.stats.heartbeat_errors
        wait_until(lambda: reporter.stats.heartbeat_errors >= errors + 2, timeout=10)
        assert reporter.is_running()

        server.start()
        beats = reporter.stats.heartbeats
        wait_until(lambda: reporter.stats.heartbeats >= beats + 2, timeout=10)
        assert reporter.is_running()
        assert refusals == []
        assert registry.get_worker("w1").status is WorkerStatus.IDLE
    finally:
        reporter.stop()
        connection.disconnect()


# ========================================================= WorkerCrashRecovery
@pytest.fixture
def recovery(
    registry: WorkerRegistry, shim_queue: TaskQueue, store: CheckpointStore
) -> Iterator[WorkerCrashRecovery]:
    reaper = WorkerCrashRecovery(registry, shim_queue, store)
    yield reaper
    reaper.stop_monitoring()


def crash_report(recovery: WorkerCrashRecovery) -> Any:
    """Run reaper passes until one declares a worker crashed; returns that pass's report."""

    def one_pass() -> Any:
        report = recovery.detect_and_recover()
        return report if report.crashed_workers else None

    return wait_until(one_pass, timeout=3)


def test_recovery_detects_a_worker_that_missed_its_heartbeats(
    registry: WorkerRegistry, shim_queue: TaskQueue, recovery: WorkerCrashRecovery
) -> None:
    """A pass declares the silent worker crashed and hands its task back without a checkpoint."""
    register(registry, "w1", interval=0.05)
    shim_queue.add(Task(id="a"))
    claim_as(shim_queue, "w1")

    report = crash_report(recovery)

    assert [c.worker_id for c in report.crashed_workers] == ["w1"]
    assert report.reassigned_tasks == ["a"]
    assert report.failed_tasks == []
    assert report.stalled_tasks == []
    assert report.resumed_from_checkpoint == {"a": False}
    assert not report.empty
    assert recovery.last_report == report
    task = shim_queue.get("a")
    assert (task.status, task.stalls) == (TaskStatus.PENDING, 1)
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED
    assert recovery.detect_and_recover().empty


def test_recovery_of_a_task_with_a_checkpoint(
    registry: WorkerRegistry,
    shim_queue: TaskQueue,
    store: CheckpointStore,
    recovery: WorkerCrashRecovery,
) -> None:
    """A recovered task with a checkpoint is reported resumable and its next claimer gets the
    checkpoint's state."""
    register(registry, "w1", interval=0.05)
    shim_queue.add_many([Task(id="saved"), Task(id="fresh")])
    first = claim_as(shim_queue, "w1")
    claim_as(shim_queue, "w1")
    store.save(first.task.id, first.token, {"rows": 500}, progress=0.5, attempt=1)

    report = crash_report(recovery)

    assert report.reassigned_tasks == ["fresh", "saved"]
    assert report.resumed_from_checkpoint == {"fresh": False, "saved": True}
    recorder = FnExecutor("rec", ("code",), succeed)
    wx = WorkExecutor(shim_queue, plugins_with(recorder), store, worker_id="w2")
    for _ in range(2):
        run(wx, claim_as(shim_queue, "w2"))
    resume = {ctx.task.id: ctx.resume_state for ctx in recorder.contexts}
    assert resume == {"saved": {"rows": 500}, "fresh": None}


def test_recovery_of_several_simultaneous_crashes(
    registry: WorkerRegistry, shim_queue: TaskQueue, recovery: WorkerCrashRecovery
) -> None:
    """Three workers crashing together all get detected and all their tasks requeued."""
    shim_queue.add_many([Task(id=f"t{i}") for i in range(6)])
    holders: dict[str, str] = {}
    for n in range(3):
        register(registry, f"w{n}", interval=0.05)
        for claim in shim_queue.claim(["code"], worker_id=f"w{n}", count=2):
            holders[claim.task.id] = f"w{n}"
    crashed: dict[str, dict[str, str]] = {}
    reassigned: list[str] = []

    def all_detected() -> bool:
        report = recovery.detect_and_recover()
        crashed.update({c.worker_id: c.tasks for c in report.crashed_workers})
        reassigned.extend(report.reassigned_tasks)
        return len(crashed) == 3

    wait_until(all_detected, timeout=3)

    assert sorted(reassigned) == sorted(holders)
    for worker_id, tasks in crashed.items():
        assert sorted(tasks) == sorted(t for t, w in holders.items() if w == worker_id)
    for task in shim_queue.get_many(holders):
        assert (task.status, task.stalls) == (TaskStatus.PENDING, 1)
    assert registry.live_worker_ids() == []


def test_recovery_reaps_expired_leases(
    shim_queue: TaskQueue, recovery: WorkerCrashRecovery
) -> None:
    """A task whose lease expired without any crash is reported stalled and requeued."""
    shim_queue.add(Task(id="a"))
    claim_as(shim_queue, "nobody", lease_ms=1)
    time.sleep(0.01)  # let the 1 ms lease expire

    report = recovery.detect_and_recover()

    assert report.crashed_workers == []
    assert report.stalled_tasks == ["a"]
    assert report.reassigned_tasks == ["a"]
    assert shim_queue.get("a").status is TaskStatus.PENDING


def test_monitoring_loop_recovers_without_being_called(
    registry: WorkerRegistry, shim_queue: TaskQueue, recovery: WorkerCrashRecovery
) -> None:
    """The monitoring thread runs passes on its interval and recovers a crashed worker's task."""
    recovery.start_monitoring(0.05)
    wait_until(lambda: recovery.passes >= 3, timeout=5)

    register(registry, "w1", interval=0.05)
    shim_queue.add(Task(id="a"))
    claim_as(shim_queue, "w1")

    wait_until(lambda: shim_queue.get("a").status is TaskStatus.PENDING, timeout=5)
    assert registry.get_worker("w1").status is WorkerStatus.CRASHED
    assert shim_queue.get("a").stalls == 1


def test_recover_worker_by_id(
    registry: WorkerRegistry, shim_queue: TaskQueue, recovery: WorkerCrashRecovery
) -> None:
    """recover_worker declares one healthy-looking worker crashed now and requeues its task."""
    register(registry, "w1")
    register(registry, "w2")
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    claim_as(shim_queue, "w1")
    claim_as(shim_queue, "w2")

    report = recovery.recover_worker("w1")

    assert [(c.worker_id, c.reason) for c in report.crashed_workers] == [("w1", "declared crashed")]
    assert report.reassigned_tasks == ["a"]
    assert shim_queue.get("b").status is TaskStatus.RUNNING
    assert registry.live_worker_ids() == ["w2"]
    assert recovery.recover_worker("w1").empty


def test_concurrent_reapers_requeue_each_task_once(
    registry: WorkerRegistry, shim_queue: TaskQueue, store: CheckpointStore
) -> None:
    """Several reapers racing over the same crashes requeue every task exactly once."""
    shim_queue.add_many([Task(id=f"t{i}") for i in range(8)])
    for n in range(2):
        register(registry, f"w{n}", interval=0.05)
        shim_queue.claim(["code"], worker_id=f"w{n}", count=4)
    time.sleep(0.2)  # past both heartbeat deadlines (3 x 50 ms)
    reapers = [WorkerCrashRecovery(registry, shim_queue, store) for _ in range(4)]
    start = threading.Barrier(len(reapers))
    reports: list[Any] = []
    errors: list[BaseException] = []

    def reap(reaper: WorkerCrashRecovery) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(5):
                reports.append(reaper.detect_and_recover())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reap, args=(r,)) for r in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    reassigned = [t for r in reports for t in r.reassigned_tasks]
    assert sorted(reassigned) == [f"t{i}" for i in range(8)]
    crashed = [c.worker_id for r in reports for c in r.crashed_workers]
    assert sorted(crashed) == ["w0", "w1"]
    assert [t.stalls for t in shim_queue.get_many(f"t{i}" for i in range(8))] == [1] * 8


# ================================================================ Worker runtime
@pytest.fixture
def worker_factory(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(worker_id: str, *executors: Any, **config: Any) -> Worker:
        factory = MemoryBackendFactory()
        options: dict[str, Any] = {
            "worker_id": worker_id,
            # Liveness runs out after three missed beats: 1.5 s, so a heartbeat thread starved
            # on a loaded machine does not get the worker declared crashed by its own reaper.
            "heartbeat_interval": 0.5,
            "claim_block": 0.2,
            "default_executor": None,
            "checkpoint_backend": "memory",
            "reap_interval": 0.1,
            "allow": {"all"},  # the test executors run whatever the tests give them
        }
        options.update(config)
        worker = Worker(
            shim_connection,
            shim_settings,
            WorkerConfig(**options),
            plugins=plugins_with(*executors, backends=[factory]),
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop(grace=0)
    for worker in made:  # let blocked claims return before the connection is closed
        for thread in worker._threads:
            thread.join(timeout=5)


def test_worker_registers_and_completes_tasks(
    worker_factory, registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """A started worker registers itself and runs tasks to completion."""
    worker = worker_factory("rt-1", FnExecutor("coder", ("code",), succeed))
    assert worker.capabilities.supported_task_types == ("code",)
    assert worker.checkpoints is not None

    worker.start()

    registered = registry.get_worker("rt-1")
    assert registered.status in (WorkerStatus.IDLE, WorkerStatus.BUSY)
    assert registered.capabilities.supported_task_types == ("code",)
    assert "rt-1" in registry.live_worker_ids()
    shim_queue.add_many([Task(id=f"t{i}") for i in range(3)])
    wait_until(lambda: shim_queue.stats().complete == 3, timeout=10)
    assert {shim_queue.get(f"t{i}").worker_id for i in range(3)} == {"rt-1"}
    wait_until(lambda: registry.get_worker("rt-1").stats.tasks_completed == 3)
    wait_until(lambda: worker.reporter.stats.tasks_completed == 3)
    assert sorted(o.status for o in worker.outcomes) == ["complete"] * 3
    wait_until(lambda: registry.get_worker("rt-1").status is WorkerStatus.IDLE)


def test_worker_runs_tasks_concurrently(worker_factory, shim_queue: TaskQueue) -> None:
    """A worker with concurrency 2 runs two tasks at the same time."""
    barrier = threading.Barrier(2, timeout=5)

    def meet(task: Task, ctx: Any) -> TaskResult:
        barrier.wait()  # only passes when both tasks run at once
        return TaskResult(success=True)

    worker = worker_factory("rt-2", FnExecutor("pair", ("code",), meet), concurrency=2)
    worker.start()
    shim_queue.add_many([Task(id="a"), Task(id="b")])

    wait_until(lambda: shim_queue.stats().complete == 2, timeout=10)
    assert [t.attempts for t in shim_queue.get_many(["a", "b"])] == [1, 1]


def test_worker_stop_lets_a_short_task_finish(
    worker_factory, registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """stop() with enough grace waits for the running task to complete, then goes offline."""
    started = threading.Event()

    def short(task: Task, ctx: Any) -> TaskResult:
        started.set()
        time.sleep(0.3)
        return TaskResult(success=True, output="finished")

    worker = worker_factory("rt-3", FnExecutor("short", ("code",), short))
    worker.start()
    shim_queue.add(Task(id="a"))
    assert started.wait(5)

    worker.stop(grace=5)

    task = shim_queue.get("a")
    assert (task.status, task.result.output) == (TaskStatus.COMPLETE, "finished")
    assert registry.get_worker("rt-3").status is WorkerStatus.OFFLINE
    assert "rt-3" not in registry.live_worker_ids()
    assert worker.wait_stopped(0)


def test_an_idle_worker_stops_without_sitting_out_its_claim_block(
    worker_factory, registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """An idle worker sleeps in Redis for work (here for a minute at a time); stop() wakes that
    claim instead of waiting for it, and the wake marker goes with the worker."""
    worker = worker_factory("rt-idle", FnExecutor("coder", ("code",), succeed), claim_block=60.0)
    worker.start()
    wait_until(lambda: worker.feed._claiming)

    stopping = time.monotonic()
    stopper = threading.Thread(target=worker.stop, kwargs={"grace": 30})
    stopper.start()
    stopper.join(timeout=30)

    assert not stopper.is_alive()
    # Woken, not at the end of its wait slice (tens of milliseconds, against 4 s).
    assert time.monotonic() - stopping < queue_module.MAX_BLOCK_SLICE
    assert all(not thread.is_alive() for thread in worker._threads)
    assert registry.get_worker("rt-idle").status is WorkerStatus.OFFLINE
    assert not shim_queue.client.exists(shim_queue.keys.wake("@rt-idle"))


def test_a_stop_asked_for_while_the_worker_starts_waits_for_the_start(
    worker_factory, registry: WorkerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM right after the worker joined used to run stop() beside start(): it joined a
    thread not started yet, raised, and the worker never stopped. stop() now waits for start()
    to return, then stops everything start() started."""
    registering, go_on = threading.Event(), threading.Event()
    worker = worker_factory("rt-starting", FnExecutor("coder", ("code",), succeed))
    real_register = worker._register

    def slow_register() -> None:
        registering.set()
        assert go_on.wait(10)
        real_register()

    monkeypatch.setattr(worker, "_register", slow_register)
    starter = threading.Thread(target=worker.start)
    starter.start()
    assert registering.wait(10)
    stopper = threading.Thread(target=worker.stop, kwargs={"grace": 1})
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # waiting for start() to return
    go_on.set()
    starter.join(10)
    stopper.join(20)
    assert not stopper.is_alive()
    assert worker.wait_stopped(0)
    assert registry.get_worker("rt-starting").status is WorkerStatus.OFFLINE
    assert not any(thread.is_alive() for thread in worker._threads)


def test_an_attempt_that_fails_before_its_executor_runs_reaches_the_observers(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    shim_queue: TaskQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task that cannot be prepared fails its attempt, and the worker's observers (metrics,
    spans) count it as failed like any other failure."""
    seen: list[tuple[str, str]] = []

    class Recorder:
        def claimed(self, claims: list[Claim]) -> None:
            pass

        def finished(self, task: Task, outcome: str, duration_ms: int, result: Any = None) -> None:
            seen.append((task.id, outcome))

    config = WorkerConfig(
        worker_id="rt-early",
        heartbeat_interval=0.1,
        claim_block=0.2,
        reap_interval=0.1,
        default_executor=None,
        allow={"all"},
    )
    worker = Worker(
        shim_connection,
        shim_settings,
        config,
        plugins=plugins_with(FnExecutor("coder", ("code",), succeed)),
        observers=[Recorder()],
    )

    def unpreparable(claim: Claim) -> Any:
        raise RuntimeError("no context for you")

    monkeypatch.setattr(worker.executor, "prepare", unpreparable)
    worker.start()
    try:
        shim_queue.add(Task(id="early", max_attempts=1))
        wait_until(lambda: shim_queue.get("early").status is TaskStatus.FAILED, timeout=10)
        wait_until(lambda: seen == [("early", "failed")])
    finally:
        worker.stop(grace=0)


def test_worker_stop_releases_a_long_task(
    worker_factory, registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """stop() past its grace releases the running task (pending again at once, no stall
    counted), cancels its execution, fences its late result and leaves the worker offline."""
    started = threading.Event()

    def long(task: Task, ctx: Any) -> TaskResult:
        started.set()
        ctx.cancelled.wait(10)
        time.sleep(0.2)  # cleaning up after the cancellation takes a moment
        return TaskResult(success=False, error=f"interrupted: {ctx.cancel_reason}")

    executor = FnExecutor("long", ("code",), long)
    worker = worker_factory("rt-4", executor)
    worker.start()
    shim_queue.add(Task(id="a"))
    assert started.wait(5)

    worker.stop(grace=0.1)

    task = shim_queue.get("a")
    assert (task.status, task.stalls, task.lease, task.attempts) == (TaskStatus.PENDING, 0, 0, 0)
    assert executor.contexts[0].cancel_reason == "worker shutting down"
    assert registry.get_worker("rt-4").status is WorkerStatus.OFFLINE
    assert "rt-4" not in registry.live_worker_ids()
    wait_until(lambda: [o.status for o in worker.outcomes] == ["fenced"])
    task = shim_queue.get("a")
    assert (task.status, task.result) == (TaskStatus.PENDING, None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_worker_survives_an_executor_that_exits(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """An executor calling sys.exit() neither leaves its task running forever nor stops the
    worker from running the next task."""
    settings = attrs.evolve(shim_settings, lease_ms=500)
    queue = TaskQueue(shim_connection, settings)

    def work(task: Task, ctx: Any) -> TaskResult:
        if task.id == "exits":
            sys.exit(3)
        return TaskResult(success=True)

    worker = Worker(
        shim_connection,
        settings,
        WorkerConfig(
            worker_id="rt-7",
            allow={"all"},
            heartbeat_interval=0.1,
            claim_block=0.2,
            reap_interval=0.1,
        ),
        plugins=plugins_with(FnExecutor("w", ("code",), work)),
    )
    worker.start()
    try:
        queue.add(Task(id="exits", max_attempts=1))
        wait_until(lambda: queue.get("exits").status is not TaskStatus.PENDING)
        queue.add(Task(id="next"))

        wait_until(lambda: queue.get("next").status is TaskStatus.COMPLETE, timeout=3)
        wait_until(lambda: queue.get("exits").status is not TaskStatus.RUNNING, timeout=3)
    finally:
        worker.stop(grace=0)
        for thread in worker._threads:
            thread.join(timeout=5)


class ReportingEvent(threading.Event):
    """A cancellation flag whose ``set()`` returns only after ``after_set()`` is true: it pins
    the interleaving where the executor thread reports its result before the cancelling
    thread goes on."""

    def __init__(self, after_set: Callable[[], bool]) -> None:
        super().__init__()
        self._after_set = after_set

    def set(self) -> None:
        super().set()
        wait_until(self._after_set, timeout=5)


def test_worker_stop_releases_a_task_whose_executor_stops_at_once(
    worker_factory, shim_queue: TaskQueue
) -> None:
    """stop() past its grace releases the task even when its executor returns as soon as it is
    cancelled (here: its result is recorded before stop() goes on)."""
    started = threading.Event()

    def prompt(task: Task, ctx: Any) -> TaskResult:
        ctx._cancelled = ReportingEvent(  # made on first use: this one is used instead
            lambda: shim_queue.get(task.id).status is not TaskStatus.RUNNING
        )
        started.set()
        ctx.cancelled.wait(10)
        return TaskResult(success=False, error=f"interrupted: {ctx.cancel_reason}")

    worker = worker_factory("rt-6", FnExecutor("prompt", ("code",), prompt))
    worker.start()
    shim_queue.add(Task(id="a", max_attempts=3))
    assert started.wait(5)

    worker.stop(grace=0.1)

    task = shim_queue.get("a")
    assert (task.status, task.stalls, task.result) == (TaskStatus.PENDING, 0, None)


def test_worker_declared_crashed_while_alive_stops_its_task_and_rejoins(
    worker_factory, registry: WorkerRegistry, shim_queue: TaskQueue
) -> None:
    """A live worker declared crashed cancels its running task (its lease is void) and
    registers again on its next heartbeat."""
    started = threading.Event()

    def long(task: Task, ctx: Any) -> TaskResult:
        started.set()
        ctx.cancelled.wait(10)
        return TaskResult(success=True, output="too late")

    executor = FnExecutor("long", ("code",), long)
    worker = worker_factory("rt-5", executor)
    worker.start()
    shim_queue.add(Task(id="a"))
    assert started.wait(5)

    crashed = registry.declare_crashed("rt-5")

    assert crashed.tasks == {"a": "pending"}
    first = executor.contexts[0]
    wait_until(first.cancelled.is_set, timeout=5)
    assert "lease lost" in first.cancel_reason
    wait_until(
        lambda: registry.get_worker("rt-5").status in (WorkerStatus.IDLE, WorkerStatus.BUSY),
        timeout=5,
    )
    assert "rt-5" in registry.live_worker_ids()
    wait_until(lambda: any(o.task_id == "a" and o.status == "fenced" for o in worker.outcomes))
    task = shim_queue.get("a")
    assert task.stalls == 1
    assert task.result is None


def test_worker_survives_a_task_whose_preparation_fails(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A claimed task that cannot be prepared (its dependency's record is corrupt) fails its
    attempt with the reason, and the worker goes on with the next task."""
    queue = TaskQueue(shim_connection, shim_settings)
    queue.add_many([Task(id="dep"), Task(id="b", dependencies=("dep",), max_attempts=1)])
    [claim] = queue.claim(["code"], worker_id="someone")
    queue.complete("dep", claim.token)
    shim_connection.get_client().hset(queue.keys.task("dep"), "result", "{not json")
    worker = Worker(
        shim_connection,
        shim_settings,
        WorkerConfig(worker_id="rt-8", allow={"all"}, heartbeat_interval=0.1, claim_block=0.2),
        plugins=plugins_with(FnExecutor("w", ("code",), succeed)),
    )
    worker.start()
    try:
        wait_until(lambda: queue.get("b").status is TaskStatus.FAILED, timeout=10)
        assert "could not prepare" in (queue.get("b").result.error or "")
        queue.add(Task(id="next"))
        wait_until(lambda: queue.get("next").status is TaskStatus.COMPLETE, timeout=10)
    finally:
        worker.stop(grace=0)
        for thread in worker._threads:
            thread.join(timeout=5)


def test_worker_leases_outlive_three_heartbeats(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A worker beating every 40 s takes 120 s leases even when the settings say 30 s, so a
    healthy long task is never reaped between two beats."""
    worker = Worker(
        shim_connection,
        shim_settings,
        WorkerConfig(worker_id="rt-9", allow={"all"}, heartbeat_interval=40.0),
        plugins=plugins_with(),
    )
    assert worker.lease_ms == 120_000
    assert worker.feed.lease_ms == worker.reporter.lease_ms == 120_000


def test_busy_worker_chains_claims_onto_completions(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """A worker with queued work claims the next task in its completion's round trip: every
    task completes, each claimed once, in one call per task plus the first claim (a claim and
    a completion apart would take two per task).

    Claiming ahead is off and the blocking claim made once the queue runs dry outlasts the
    test, so the count holds however slow the machine (a 0.2 s block that ends empty is a
    call too, and a slow machine made one before the assertion). Heartbeats are slow enough
    that a starved heartbeat thread cannot get the worker declared crashed."""
    queue = TaskQueue(shim_connection, shim_settings)
    queue.add_many([Task(id=f"t{i}") for i in range(20)])
    worker = Worker(
        shim_connection,
        shim_settings,
        WorkerConfig(
            worker_id="rt-10", allow={"all"}, heartbeat_interval=2.0, claim_block=60, prefetch=0
        ),
        plugins=plugins_with(FnExecutor("w", ("code",), succeed)),
    )
    worker.start()
    try:
        wait_until(lambda: queue.stats().complete == 20, timeout=20)
        # The 20th outcome is recorded before the call that brought it is counted: wait for
        # the feed to sleep in its blocking claim, which it does only after counting it.
        wait_until(lambda: worker.feed._claiming)
        assert len(worker.outcomes) == 20
        assert worker.feed.claimed == 20
        assert worker.feed.calls == 21
        assert {o.status for o in worker.outcomes} == {"complete"}
    finally:
        worker.stop(grace=1)
    from shim_core.doctor import check_invariants

    assert check_invariants(queue.client, queue.keys) == []


def test_a_late_result_does_not_drop_the_lease_of_the_tasks_new_claim(
    reporter_factory: Callable[..., ProgressReporter],
) -> None:
    """The lease of an old claim is dropped only with its own token: the task, taken over
    and claimed again by this worker, keeps its new lease in the heartbeat."""
    reporter = reporter_factory()
    reporter.report_task_start("a", 2)
    reporter.report_task_complete("a", 0, "fenced", token=1)
    assert reporter.held_leases() == {"a": 2}
    reporter.report_task_complete("a", 10, "complete", token=2)
    assert reporter.held_leases() == {}
