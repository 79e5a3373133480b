"""The ``sim`` executor: steps, progress, checkpoints, failures on request, resume, cancel."""

import threading

import pytest

from shim_core import Task
from shim_core.testing import RecordingContext
from shim_plugins.executors import SimExecutor
from shim_plugins.executors.sim import SimPlan
from tests.helpers import wait_until


def sim_task(attempts=1, **params):
    return Task(executor="sim", params=params, attempts=attempts)


def run(task, executor=None, **ctx_kwargs):
    ctx = RecordingContext(task=task, **ctx_kwargs)
    result = (executor or SimExecutor(env={})).execute(task, ctx)
    ctx.close()
    return result, ctx


def test_reports_progress_and_checkpoints_after_each_step():
    """Each step reports its fraction and checkpoints {"step": i}; the last checkpoint is named."""
    result, ctx = run(sim_task(progress_steps=3))
    assert result.success
    assert ctx.fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [m for _, m in ctx.progress_calls] == ["step 1/3", "step 2/3", "step 3/3"]
    assert ctx.checkpoint_states == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert result.checkpoint_created == ctx.checkpoints[-1].id
    assert result.output == {"steps": 3, "resumed_from": 0, "attempt": 1}


def test_default_is_four_steps_and_output_param_is_returned():
    """Without progress_steps there are four steps, and the output param is the result output."""
    result, ctx = run(sim_task(output={"answer": 42}))
    assert result.output == {"answer": 42}
    assert ctx.fractions == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(("attempt", "succeeds"), [(1, False), (2, False), (3, True)])
def test_fail_first_fails_the_first_attempts(attempt, succeeds):
    """fail_first=2 fails attempts 1 and 2 (task.attempts counts starts) and lets the third pass."""
    result, _ = run(sim_task(attempts=attempt, fail_first=2))
    assert result.success is succeeds
    if not succeeds:
        assert f"attempt {attempt}" in result.error


def test_failing_attempt_checkpoints_half_the_steps_then_uses_fail_message():
    """A failing attempt works through the first half of the steps and reports fail_message."""
    result, ctx = run(sim_task(fail_first=1, progress_steps=4, fail_message="boom"))
    assert (result.success, result.error) == (False, "boom")
    assert ctx.checkpoint_states == [{"step": 1}, {"step": 2}]
    assert result.checkpoint_created == ctx.checkpoints[-1].id


def test_attempt_zero_outside_the_queue_counts_as_the_first():
    """A task never started by a queue (attempts 0) is treated as attempt 1 by fail_first."""
    result, _ = run(sim_task(attempts=0, fail_first=1))
    assert not result.success
    result, _ = run(sim_task(attempts=0))
    assert result.success


def test_resumes_from_checkpoint_state_skipping_done_steps():
    """With resume_state {"step": 2} only steps 3 and 4 run, and the log and output say so."""
    result, ctx = run(sim_task(progress_steps=4), resume_state={"step": 2})
    assert result.success
    assert ctx.fractions == [0.75, 1.0]
    assert ctx.checkpoint_states == [{"step": 3}, {"step": 4}]
    assert result.output["resumed_from"] == 2
    assert any("resumed" in line for line in ctx.logs)


def test_retry_resumes_where_the_failed_attempt_left_off():
    """The second attempt, given the first one's last checkpoint, finishes only the rest."""
    first, ctx1 = run(sim_task(attempts=1, fail_first=1, progress_steps=6))
    assert not first.success
    second, ctx2 = run(
        sim_task(attempts=2, fail_first=1, progress_steps=6),
        resume_state=ctx1.checkpoint_states[-1],
    )
    assert second.success
    assert ctx2.checkpoint_states == [{"step": 4}, {"step": 5}, {"step": 6}]


@pytest.mark.parametrize("state", [{"step": "x"}, {"step": -1}, {"step": True}, {"other": 1}])
def test_unusable_resume_state_starts_afresh(state):
    """A resume state without a sensible step count runs every step."""
    result, ctx = run(sim_task(progress_steps=2), resume_state=state)
    assert result.success
    assert ctx.checkpoint_states == [{"step": 1}, {"step": 2}]


def test_resume_state_beyond_the_last_step_finishes_at_once():
    """A checkpoint past the last step (fewer steps now) completes without running any step."""
    result, ctx = run(sim_task(progress_steps=2), resume_state={"step": 9})
    assert result.success
    assert ctx.progress_calls == []


def test_cancelled_before_start_does_nothing():
    """A context already cancelled returns a "cancelled" failure without any step."""
    ctx = RecordingContext(task=sim_task(duration=60))
    ctx.cancelled.set()
    result = SimExecutor(env={}).execute(ctx.task, ctx)
    ctx.close()
    assert (result.success, result.error) == (False, "cancelled")
    assert ctx.progress_calls == []


def test_cancellation_during_work_returns_early():
    """Setting ctx.cancelled mid-run ends the simulated work long before its duration."""
    task = sim_task(duration=3600, progress_steps=12000)
    ctx = RecordingContext(task=task)
    results = []
    worker = threading.Thread(target=lambda: results.append(SimExecutor(env={}).execute(task, ctx)))
    worker.start()
    wait_until(lambda: ctx.progress_calls)
    ctx.cancelled.set()
    worker.join(timeout=60)
    ctx.close()
    assert not worker.is_alive()
    assert (results[0].success, results[0].error) == (False, "cancelled")
    assert results[0].checkpoint_created == ctx.checkpoints[-1].id
    assert len(ctx.checkpoints) < 12000


def test_fail_rate_knob_from_the_environment(monkeypatch):
    """SHIM_SIM_FAIL_RATE=1 fails every attempt; 0 fails none."""
    monkeypatch.setenv("SHIM_SIM_FAIL_RATE", "1")
    result, _ = run(sim_task(), executor=SimExecutor())
    assert not result.success
    assert "random failure" in result.error
    monkeypatch.setenv("SHIM_SIM_FAIL_RATE", "0")
    result, _ = run(sim_task(), executor=SimExecutor())
    assert result.success


def test_slowdown_knob_multiplies_the_duration():
    """SHIM_SIM_SLOWDOWN scales the time of every step."""
    plan = SimPlan.read(sim_task(duration=2, progress_steps=4), {"SHIM_SIM_SLOWDOWN": "3"})
    assert plan.step_seconds == pytest.approx(1.5)
    assert SimPlan.read(sim_task(duration=2), {}).step_seconds == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("params", "env", "message"),
    [
        ({"progress_steps": 0}, {}, "progress_steps"),
        ({"progress_steps": 1.5}, {}, "progress_steps"),
        ({"duration": "soon"}, {}, "duration"),
        ({"duration": -1}, {}, "duration"),
        ({"fail_first": "x"}, {}, "fail_first"),
        ({}, {"SHIM_SIM_FAIL_RATE": "2"}, "SHIM_SIM_FAIL_RATE"),
        ({}, {"SHIM_SIM_SLOWDOWN": "fast"}, "SHIM_SIM_SLOWDOWN"),
    ],
)
def test_bad_params_and_knobs_fail_cleanly(params, env, message):
    """An unusable param or knob gives a failed result naming it, not an exception."""
    result, _ = run(sim_task(**params), executor=SimExecutor(env=env))
    assert not result.success
    assert message in result.error
