"""Worker: one process (or thread group) of the fleet, built from the seed's worker components.

``start()`` registers the worker, subscribes its liveness channel, starts the heartbeat, the
reaper, the task feed (claims ahead, records completions in batches: see ``feed.py``) and
``concurrency`` executor threads. ``stop()`` shuts down gracefully: stop claiming,
let running tasks finish within the grace period, release the rest, unregister. ``run()`` does
both around a wait, with SIGTERM / SIGINT handlers: the first signal stops gracefully, a second
one exits at once (the tasks are then reaped as for a crash).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

from shim_core.bus import MessageBus
from shim_core.checkpoints import CheckpointStore
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError, TaskError
from shim_core.keys import check_name
from shim_core.models import (
    Claim,
    Task,
    TaskResult,
    TaskType,
    WorkerCapabilities,
    WorkerRegistration,
    new_id,
)
from shim_core.outage import OutageLog
from shim_core.outcomes import Action
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import HeartbeatRefused, WorkerRegistry
from shim_core.worker.context import TaskExecution
from shim_core.worker.executor import ExecutionOutcome, Run, WorkExecutor, refused_status
from shim_core.worker.feed import Completion, Finished, TaskFeed
from shim_core.worker.policy import ExecutorPolicy
from shim_core.worker.recovery import WorkerCrashRecovery
from shim_core.worker.reporter import ProgressReporter

log = logging.getLogger(__name__)


class TaskObserver(Protocol):
    """What a worker tells its observers (its metrics, its tracing spans: see
    :mod:`shim_core.metrics`) about the tasks it claims and runs."""

    def claimed(self, claims: list[Claim]) -> None:
        """Tasks this worker just claimed."""

    def finished(
        self, task: Task, outcome: str, duration_ms: int, result: TaskResult | None = None
    ) -> None:
        """An execution of ``task`` ran to ``outcome`` (an ExecutionOutcome status)."""


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:30]
    return f"{host or 'worker'}-{os.getpid()}-{new_id()[:6]}"


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """How one worker behaves; the fleet-wide settings (Redis, namespace) are in Settings."""

    worker_id: str = attrs.field(factory=default_worker_id)
    name: str = ""
    #: Task types to claim; empty: the types its executors declare, or the five built-in types
    #: when a default executor is set.
    types: tuple[str, ...] = ()
    concurrency: int = 1
    #: Seconds between heartbeats (None: the settings' heartbeat_interval).
    heartbeat_interval: float | None = None
    #: Executor for tasks that name none and whose type no executor declares.
    default_executor: str | None = None
    #: Longest single blocking claim; bounds how fast a stopping worker notices.
    claim_block: float = 1.0
    #: Tasks claimed ahead at most while tasks are short (about 20 ms of work is held, judged by
    #: recent durations; long tasks are never held back). 0: claim only for an idle thread.
    prefetch: int = 256
    #: Seconds between reaper passes (crash detection by liveness is at most this late).
    reap_interval: float = 0.5
    shutdown_grace: float = 30.0
    max_task_duration_ms: int = 3_600_000
    checkpoint_backend: str = "redis"
    session_id: str = ""
    #: Executors that run code this worker may run (names, or ``all``); executors that say
    #: ``runs_code = False`` (``sim``) always run. Tasks for the others are left to other workers.
    allow: frozenset[str] = attrs.field(default=frozenset(), converter=_names)

    def __attrs_post_init__(self) -> None:
        check_name("worker id", self.worker_id)
        if self.concurrency < 1:
            raise ShimError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.prefetch < 0:
            raise ShimError(f"prefetch must be 0 or more, got {self.prefetch}")


class Worker:
    """A member of the fleet."""

    def __init__(
        self,
        connection: RedisConnectionManager,
        settings: Settings,
        config: WorkerConfig | None = None,
        *,
        plugins: Plugins | None = None,
        observers: Sequence[TaskObserver] = (),
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.config = config or WorkerConfig()
        self.id = self.config.worker_id
        self.plugins = plugins if plugins is not None else Plugins()
        self.queue = TaskQueue(connection, settings)
        self.registry = WorkerRegistry(connection, settings)
        self.bus = MessageBus(connection, settings)
        self.checkpoints = self._checkpoint_store()
        self.interval = self.config.heartbeat_interval or settings.heartbeat_interval
        self.capabilities = WorkerCapabilities(
            max_concurrent_tasks=self.config.concurrency,
            supported_task_types=self._types(),
            max_task_duration=self.config.max_task_duration_ms,
        )
        # A lease always outlives three heartbeats, whatever the interval: a healthy long task is
        # never reaped between two beats.
        self.lease_ms = max(settings.lease_ms, int(self.interval * 3000))
        self.policy = ExecutorPolicy.build(
            self.plugins,
            self.config.allow,
            types=self.capabilities.supported_task_types,
            default_executor=self.config.default_executor,
        )
        self.executor = WorkExecutor(
            self.queue,
            self.plugins,
            self.checkpoints,
            worker_id=self.id,
            default_executor=self.config.default_executor,
            max_task_duration_ms=self.config.max_task_duration_ms,
            policy=self.policy,
        )
        #: Shared by the feed, the heartbeat and the reaper: one line per Redis outage.
        self.outage = OutageLog(log)
        self.feed = TaskFeed(
            self.queue,
            self.id,
            self.capabilities.supported_task_types,
            concurrency=self.config.concurrency,
            prefetch=self.config.prefetch,
            lease_ms=self.lease_ms,
            claim_block=self.config.claim_block,
            on_claimed=self._claimed,
            on_unwanted=self._release,
            outage=self.outage,
        )
        self.reporter = ProgressReporter(
            self.registry,
            self.id,
            self.interval,
            lease_ms=self.lease_ms,
            on_lost=self._leases_lost,
            on_refused=self._refused,
            outage=self.outage,
        )
        self.recovery = WorkerCrashRecovery(
            self.registry, self.queue, self.checkpoints, outage=self.outage
        )
        #: The latest outcomes (bounded: a worker may run for months).
        self.outcomes: deque[ExecutionOutcome] = deque(maxlen=1000)
        self._running: dict[str, TaskExecution] = {}
        #: Agents this worker cannot run (agent -> reason), kept across re-registrations.
        self.refused_agents: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._stopping = False
        #: start() has begun / has returned: a stop asked for meanwhile (a SIGTERM right after
        #: the worker joined) waits for it, so that it never joins threads not started yet.
        self._starting = False
        self._started = threading.Event()
        #: Told of every claim and outcome (``--metrics-port``, ``--otel``); none by default.
        self.observers = tuple(observers)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Join the fleet and start working (returns at once)."""
        self._starting = True
        try:
            self._start()
        finally:
            self._started.set()

    def _start(self) -> None:
        self._register()
        self.bus.subscribe(f"alive:{self.id}", lambda event, channel: None)
        self.feed.start()
        self.reporter.start()
        self.recovery.start_monitoring(self.config.reap_interval)
        for n in range(self.config.concurrency):
            thread = threading.Thread(target=self._work, name=f"shim-{self.id}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "worker %s started: types %s, concurrency %d",
            self.id,
            ",".join(self.capabilities.supported_task_types),
            self.config.concurrency,
        )

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: finish or release current tasks within ``grace`` seconds."""
        if self._stopping:
            return
        self._stopping = True
        if self._starting:
            self._started.wait()
        deadline = time.monotonic() + (self.config.shutdown_grace if grace is None else grace)
        self.feed.stop_claiming()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        # The grace period is over: hand back what did not start, record what finished.
        self.feed.shut()
        self.feed.close()
        with self._lock:
            unfinished = list(self._running.values())
        for execution in unfinished:
            # Release first: the executor's own result, once cancelled, is then refused as stale
            # instead of spending an attempt.
            try:
                self.queue.release(execution.task.id, execution.token)
                log.info("released unfinished task %s", execution.task.id)
            except TaskError:
                pass  # finished or taken over meanwhile
            execution.cancel("worker shutting down")
        self.recovery.stop_monitoring()
        self.reporter.stop()
        try:
            self.registry.unregister_worker(self.id)
        except ShimError as exc:
            log.warning("could not unregister %s: %s", self.id, exc)
        self.bus.close()
        self._stopped.set()

    def run(self) -> None:
        """Start, then block until stopped by a signal or :meth:`stop`."""
        self._starting = True  # a signal from here on waits for start() to return
        if threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        self.start()
        self._stopped.wait()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def running_tasks(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    # ------------------------------------------------------------------- work
    def _work(self) -> None:
        """An executor thread: take a claim, run it, hand back the result, until stopped. A
        task in hand is already running for everyone else (the claim started it): a graceful
        stop lets it run within the grace period instead of handing it back."""
        finished: Finished | None = None
        while True:
            claim = self.feed.take(finished)
            if claim is None:
                return
            finished = self._run_claim(claim)

    def _release(self, claim: Claim) -> None:
        """Hand back a claim that no thread will run (the feed's ``on_unwanted``: claims left
        when the grace period ends or that arrive after it, claims held behind a long task)."""
        with contextlib.suppress(ShimError):
            self.queue.release(claim.task.id, claim.token)
        self.reporter.report_task_complete(claim.task.id, 0, "released", token=claim.token)

    def _claimed(self, claims: list[Claim]) -> None:
        """Hold the leases of new claims in the heartbeat from now on."""
        for claim in claims:
            self.reporter.report_task_start(claim.task.id, claim.token)
        for observer in self.observers:
            observer.claimed(claims)

    def _run_claim(self, claim: Claim) -> Finished:
        started = time.monotonic()
        try:
            execution = self.executor.prepare(claim)
        except Exception as exc:
            log.exception("could not prepare task %s", claim.task.id)
            with contextlib.suppress(ShimError):  # else the lease expires and is reaped
                self.queue.fail(claim.task.id, claim.token, f"could not prepare: {exc}")
            self._failed_early(claim.task, claim.token)
            return Finished(time.monotonic() - started)
        return self._execute(execution, started)

    def _execute(self, execution: TaskExecution, started: float) -> Finished:
        """Run one execution. A success is handed back for the feed to record in its next batch;
        any other outcome is recorded at once (they are rare and may need the round trip's
        answer)."""
        task_id = execution.task.id
        with self._lock:
            self._running[task_id] = execution
        completion = None
        try:
            run = self.executor.run(execution)
            if run.decision.action is Action.COMPLETE:
                completion = Completion(
                    execution.claim,
                    run.encoded,
                    functools.partial(self._settled, execution, run),
                )
            else:
                self._done(execution, self.executor.record(execution, run))
        except BaseException as exc:  # a task must never take its thread down
            log.exception("task %s could not be run or recorded", task_id)
            self._record_crash(execution, exc)
            self._failed_early(execution.task, execution.token)
        finally:
            with self._lock:
                self._running.pop(task_id, None)
            execution.close()
        return Finished(time.monotonic() - started, completion)

    def _failed_early(self, task: Task, token: int) -> None:
        """An attempt that failed outside its executor (it could not be prepared, or running
        or recording it raised): reported, and counted by the observers like any failure."""
        self.reporter.report_task_complete(task.id, 0, "failed", token=token)
        for observer in self.observers:
            observer.finished(task, "failed", 0)

    def _settled(self, execution: TaskExecution, run: Run, outcome: int | ShimError) -> None:
        """The feed recorded (or the queue refused) a completion."""
        if isinstance(outcome, ShimError):
            status = refused_status(execution.task.id, execution.token, outcome)
        else:
            status = "complete"
        self._done(execution, self.executor.outcome(execution, run, status))

    def _done(self, execution: TaskExecution, outcome: ExecutionOutcome) -> None:
        self.outcomes.append(outcome)
        self.reporter.report_task_complete(
            outcome.task_id, outcome.duration_ms, outcome.status, token=execution.token
        )
        for observer in self.observers:
            observer.finished(execution.task, outcome.status, outcome.duration_ms, outcome.result)
        if outcome.refuse_agent:
            self._refuse_agent(execution, outcome)

    def _refuse_agent(self, execution: TaskExecution, outcome: ExecutionOutcome) -> None:
        """Stop claiming tasks of an agent this worker cannot run; other workers take them."""
        agent = execution.task.agent
        if not agent:
            return
        reason = outcome.result.error or "cannot run this agent"
        self.refused_agents[agent] = reason
        log.warning("worker %s stops claiming %s tasks: %s", self.id, agent, reason)
        try:
            self.registry.refuse_agent(self.id, dict(self.refused_agents))
        except ShimError as exc:
            log.warning("could not record that %s refuses %s: %s", self.id, agent, exc)

    def _record_crash(self, execution: TaskExecution, exc: BaseException) -> None:
        """Fail the attempt whose execution raised past the executor (or leave it to the reaper
        when Redis is unreachable: the lease then expires)."""
        try:
            self.queue.fail(execution.task.id, execution.token, f"{type(exc).__name__}: {exc}")
        except ShimError as error:
            log.warning("could not record the failure of %s: %s", execution.task.id, error)

    def _leases_lost(self, task_ids: list[str]) -> None:
        for task_id in self.feed.discard(task_ids):
            log.warning("claimed task %s was taken back before it started", task_id)
            self.reporter.report_task_complete(task_id, 0, "released")
        with self._lock:
            lost = [self._running[t] for t in task_ids if t in self._running]
        for execution in lost:
            execution.cancel("lease lost (cancelled, reaped or taken over)")

    def _refused(self, exc: HeartbeatRefused) -> None:
        """Declared crashed while alive (e.g. frozen past the threshold): stop the tasks, whose
        leases are void, and join the fleet again."""
        log.warning("%s; stopping its tasks and registering again", exc)
        self._leases_lost(exc.lost)
        if not self._stopping:
            self._register()

    # ------------------------------------------------------------------ set-up
    def _register(self) -> None:
        self.registry.register_worker(
            WorkerRegistration(
                id=self.id,
                name=self.config.name or self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                session_id=self.config.session_id,
                capabilities=self.capabilities,
                refused_agents=dict(self.refused_agents),
                denied_executors=tuple(sorted(self.policy.denied)),
                denied_types=self.policy.denied_types,
            ),
            heartbeat_interval=self.interval,
        )

    def _types(self) -> tuple[str, ...]:
        if self.config.types:
            return self.config.types
        declared = [t for e in self.plugins.executors.values() for t in e.task_types]
        if self.config.default_executor:
            declared += TaskType.BUILTIN
        return tuple(dict.fromkeys(declared)) or TaskType.BUILTIN

    def _checkpoint_store(self) -> CheckpointStore | None:
        factory = self.plugins.backends.get(self.config.checkpoint_backend)
        if factory is None:
            log.warning(
                "no checkpoint backend %r: tasks restart from scratch after a crash",
                self.config.checkpoint_backend,
            )
            return None
        return CheckpointStore(factory.create(self.connection, self.settings), self.queue)

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            if self._stopping:
                log.warning("second signal: exiting now; tasks will be reaped")
                os._exit(1)
            log.info("signal %d: shutting down gracefully", signum)
            # A stop that hangs well past its grace period shows where, in the worker's log.
            faulthandler.dump_traceback_later(self.config.shutdown_grace + 15, exit=False)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
