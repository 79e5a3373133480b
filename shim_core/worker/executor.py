"""WorkExecutor: runs one claimed task through its executor plugin (seed component 9)."""

from __future__ import annotations

import logging
import time
import traceback

import attrs

from shim_core.checkpoints import CheckpointStore
from shim_core.errors import InvalidTransition, ShimError, StaleLease, TaskError
from shim_core.models import Claim, Task, TaskOutcome, TaskResult
from shim_core.outcomes import Action, Decision, decide
from shim_core.plugins import Plugins
from shim_core.queue import EncodedResult, TaskQueue
from shim_core.worker.context import TaskExecution
from shim_core.worker.deadlines import Deadlines
from shim_core.worker.policy import ExecutorPolicy

log = logging.getLogger(__name__)


@attrs.frozen
class ExecutionOutcome:
    """How one execution ended.

    ``status``: ``complete``, ``retrying``, ``throttled`` (rate limited: waits for the agent's
    cooldown without spending an attempt), ``failed``, ``fenced`` (the result was refused because
    another worker holds the task now), ``cancelled`` (the task was cancelled meanwhile).
    """

    task_id: str
    status: str
    duration_ms: int
    result: TaskResult
    #: The worker cannot run the task's agent (missing CLI, refused credentials).
    refuse_agent: bool = False


@attrs.frozen
class Run:
    """A finished execution not yet recorded: its result and what it leads to."""

    result: TaskResult
    decision: Decision
    duration_ms: int
    #: The result as the scripts take it (encoded once, when checked).
    encoded: EncodedResult


class WorkExecutor:
    """Prepares the context, runs the executor, enforces the time limit, records the result."""

    def __init__(
        self,
        queue: TaskQueue,
        plugins: Plugins,
        checkpoints: CheckpointStore | None,
        *,
        worker_id: str,
        default_executor: str | None = None,
        max_task_duration_ms: int | None = None,
        policy: ExecutorPolicy | None = None,
    ) -> None:
        self.queue = queue
        self.plugins = plugins
        self.checkpoints = checkpoints
        self.worker_id = worker_id
        self.default_executor = default_executor
        #: The executors this worker may run (None: every installed one).
        self.policy = policy
        self.max_task_duration_ms = max_task_duration_ms
        #: The time limits of this worker's running tasks, kept by one thread.
        self.deadlines = Deadlines()

    def prepare(self, claim: Claim) -> TaskExecution:
        """The execution context: dependency results and, after a crash or stall, the latest
        checkpoint to resume from."""
        task = claim.task
        results = self.queue.results(task.dependencies) if task.dependencies else {}
        resume = None
        if self.checkpoints is not None and task.attempts > 1:
            latest = self.checkpoints.latest(task.id)
            resume = latest.state if latest is not None else None
        return TaskExecution(
            claim,
            self.queue,
            self.checkpoints,
            worker_id=self.worker_id,
            resume_state=resume,
            dependency_results=results,
            agent_adapters=self.plugins.adapters,
        )

    def execute_task(self, execution: TaskExecution) -> ExecutionOutcome:
        """Run the task and record its result; never raises for a task's own failure."""
        run = self.run(execution)
        return self.record(execution, run)

    def run(self, execution: TaskExecution) -> Run:
        """Run the task through its executor within its time limit and decide what its result
        leads to; records nothing (see :meth:`record`). Never raises for a task's own failure."""
        task = execution.task
        start = time.monotonic()
        signer = self.queue.signer
        if signer is not None and not signer.verify(task):
            log.warning("task %s not run: its signature does not verify", task.id)
            result = TaskResult(
                success=False,
                error="signature mismatch: the task is unsigned, signed with another key or "
                "changed since it was signed; not run",
                outcome=TaskOutcome.REJECTED,
            )
            return self._ran(task, result, start)
        executor = self.plugins.executor_for(task, self.default_executor)
        refusal = None
        if executor is None:
            wanted = task.executor or f"one for type {task.type!r}"
            refusal = f"no executor {wanted} on worker {self.worker_id}"
        elif self.policy is not None:
            refusal = self.policy.refusal(executor.name)
        if executor is None or refusal is not None:
            # Not permanent: in a mixed fleet another worker may have (and allow) the executor;
            # the retries with backoff give it the chance before the task fails for good.
            return self._ran(task, TaskResult(success=False, error=refusal), start)
        limit_ms = task.timeout_ms or self.max_task_duration_ms
        deadline = None
        if limit_ms:
            reason = f"timed out after {limit_ms / 1000:g} s"
            deadline = self.deadlines.add(limit_ms / 1000, lambda: execution.cancel(reason))
        try:
            returned: object = executor.execute(task, execution)
            # A plugin may return a bare value; it is the output of a successful run.
            result = (
                returned
                if isinstance(returned, TaskResult)
                else TaskResult(success=True, output=returned)
            )
        except Exception as exc:
            execution.log.error("executor %s raised:\n%s", executor.name, traceback.format_exc())
            result = TaskResult(success=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            if deadline is not None:
                self.deadlines.cancel(deadline)
        if execution.cancel_reason.startswith("timed out"):
            result = attrs.evolve(
                result,
                success=False,
                error=execution.cancel_reason,
                outcome=TaskOutcome.TIMED_OUT,
            )
        return self._ran(task, result, start)

    def _ran(self, task: Task, result: TaskResult, start: float) -> Run:
        duration = int((time.monotonic() - start) * 1000)
        if result.duration_ms is None:
            result = attrs.evolve(result, duration_ms=duration)
        limit = self.queue.settings.max_payload_bytes
        try:
            encoded = EncodedResult.of(result)
            problem = (
                f"the result is {len(encoded.json)} bytes, over the {limit}-byte limit "
                "(SHIM_MAX_PAYLOAD_BYTES)"
                if len(encoded.json) > limit
                else ""
            )
        except (TypeError, ValueError) as exc:
            problem = f"the result cannot be stored as JSON: {exc}"
        if problem:
            result = TaskResult(success=False, duration_ms=duration, error=problem)
            encoded = EncodedResult.of(result)
        decision = decide(task, result, default_attempts=self.queue.settings.max_attempts)
        return Run(result, decision, duration, encoded)

    def record(self, execution: TaskExecution, run: Run) -> ExecutionOutcome:
        """Carry out the run's decision in one transition (one round trip)."""
        try:
            status = self._record(execution, run.result, run.decision.action)
        except TaskError as exc:
            status = refused_status(execution.task.id, execution.token, exc)
        return self.outcome(execution, run, status)

    @staticmethod
    def outcome(execution: TaskExecution, run: Run, status: str) -> ExecutionOutcome:
        return ExecutionOutcome(
            execution.task.id, status, run.duration_ms, run.result, run.decision.refuse_agent
        )

    def _record(self, execution: TaskExecution, result: TaskResult, action: Action) -> str:
        """Carry out the decision in one transition; returns the status it led to."""
        task, token = execution.task, execution.token
        if action is Action.COMPLETE:
            self.queue.complete(task.id, token, result)
            return "complete"
        if action is Action.THROTTLE and task.agent:
            until = self.queue.throttle(task.id, token, task.agent, result)
            log.warning("agent %s is rate limited: cooling down until %s", task.agent, until)
            return "throttled"
        outcome = self.queue.fail(task.id, token, result, permanent=action is Action.FAIL)
        return "failed" if outcome.final else "retrying"


def refused_status(task_id: str, token: int, exc: ShimError) -> str:
    """The status of a result the queue refused: ``fenced`` (another worker holds the task
    now) or ``cancelled``; logs why."""
    if isinstance(exc, StaleLease):
        log.warning(
            "late result of task %s refused: another worker holds it now (lease %d superseded)",
            task_id,
            token,
        )
        return "fenced"
    log.warning("result of task %s not recorded: %s", task_id, exc)
    cancelled = isinstance(exc, InvalidTransition) and exc.status == "cancelled"
    return "cancelled" if cancelled else "fenced"
