"""The ``sim`` executor: simulated work for demos, tests and rehearsals of a fleet.

Params (all optional):

* ``duration`` — seconds of simulated work (default 0), split evenly over the steps
* ``progress_steps`` — number of steps (default 4); after each one the executor reports progress
  and checkpoints ``{"step": i}``
* ``fail_first`` — fail the first N attempts (``task.attempts`` counts executions started, the
  first run is 1)
* ``output`` — the value returned as ``TaskResult.output`` (default: a summary of the run)
* ``fail_message`` — the error of a simulated failure

A failing attempt works through the first half of the steps (checkpointing them) before it fails,
so the retry visibly resumes from the middle. An attempt that starts with a checkpoint state
(``ctx.resume_state``) skips the steps already done and says so in its log and summary.

Environment knobs for simulated fleets: ``SHIM_SIM_SLOWDOWN`` (multiplier on ``duration``,
default 1) and ``SHIM_SIM_FAIL_RATE`` (probability in [0, 1] that an attempt fails, default 0).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from shim_core.contracts import ExecutionContext
from shim_core.models import Task, TaskResult
from shim_plugins.executors._params import ParamError, integer, number

SLOWDOWN_ENV = "SHIM_SIM_SLOWDOWN"
FAIL_RATE_ENV = "SHIM_SIM_FAIL_RATE"


@attrs.frozen
class SimPlan:
    """What one ``sim`` execution will do, read from the task and the environment."""

    steps: int
    step_seconds: float
    fail_first: int
    fail_rate: float
    fail_message: str

    @classmethod
    def read(cls, task: Task, env: Mapping[str, str]) -> SimPlan:
        """Check the params and knobs; raises ParamError."""
        params = task.params
        steps = integer(params, "progress_steps", 4, minimum=1)
        duration = number(params, "duration", 0.0) or 0.0
        slowdown = number(env, SLOWDOWN_ENV, 1.0, what="environment variable") or 0.0
        fail_rate = number(env, FAIL_RATE_ENV, 0.0, maximum=1.0, what="environment variable")
        return cls(
            steps=steps,
            step_seconds=duration * slowdown / steps,
            fail_first=integer(params, "fail_first", 0),
            fail_rate=fail_rate or 0.0,
            fail_message=str(params.get("fail_message") or ""),
        )

    def first_step(self, resume_state: Mapping[str, Any] | None) -> int:
        """Steps already done according to a checkpoint state (0 on a fresh start)."""
        done = (resume_state or {}).get("step", 0)
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            return 0
        return min(done, self.steps)


@attrs.define
class SimExecutor:
    """Simulated work: sleeps in steps, reports progress, checkpoints, fails on request.

    ``env`` replaces ``os.environ`` for the knobs and ``rng`` the random source (tests).
    """

    name: str = "sim"
    task_types: tuple[str, ...] = ()
    #: Sleeps and reports: nothing in a task runs code, so no worker needs ``--allow sim``.
    runs_code: ClassVar[bool] = False
    env: Mapping[str, str] | None = None
    rng: random.Random = attrs.field(factory=random.Random)

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult:
        """Run the simulated steps of ``task`` (see the module documentation)."""
        try:
            plan = SimPlan.read(task, os.environ if self.env is None else self.env)
        except ParamError as exc:
            return TaskResult(success=False, error=str(exc))
        if ctx.cancelled.is_set():
            return TaskResult(success=False, error="cancelled")
        start = plan.first_step(ctx.resume_state)
        if start:
            ctx.log.info("resumed from checkpoint: %d of %d steps already done", start, plan.steps)
        failure = self._failure(task, plan)
        stop = max(start, plan.steps // 2) if failure else plan.steps
        last: str | None = None
        for step in range(start + 1, stop + 1):
            if ctx.cancelled.wait(plan.step_seconds):
                ctx.log.info("cancelled after %d of %d steps", step - 1, plan.steps)
                return TaskResult(success=False, error="cancelled", checkpoint_created=last)
            fraction = step / plan.steps
            ctx.progress(fraction, f"step {step}/{plan.steps}")
            last = ctx.checkpoint({"step": step}, progress=fraction)
        if failure:
            ctx.log.info("simulated failure after %d of %d steps: %s", stop, plan.steps, failure)
            return TaskResult(success=False, error=failure, checkpoint_created=last)
        if "output" in task.params:
            output = task.params["output"]
        else:
            output = {"steps": plan.steps, "resumed_from": start, "attempt": task.attempts}
        return TaskResult(success=True, output=output, checkpoint_created=last)

    def _failure(self, task: Task, plan: SimPlan) -> str | None:
        attempt = max(task.attempts, 1)  # 0: run outside the queue, count it as the first
        if attempt <= plan.fail_first:
            return plan.fail_message or (
                f"simulated failure of attempt {attempt} (failing the first {plan.fail_first})"
            )
        if plan.fail_rate and self.rng.random() < plan.fail_rate:
            return plan.fail_message or f"simulated random failure (rate {plan.fail_rate:g})"
        return None
