"""shim_core.testing.RecordingContext: the ExecutionContext double for executor tests."""

import logging
import threading

import pytest

from shim_core import Task, TaskContext, TaskResult
from shim_core.contracts import ExecutionContext
from shim_core.testing import RecordingContext


def test_is_an_execution_context_with_sensible_defaults():
    """A bare RecordingContext satisfies the protocol: fresh task, unset event, no resume state."""
    with RecordingContext() as ctx:
        assert isinstance(ctx, ExecutionContext)
        assert isinstance(ctx.cancelled, threading.Event)
        assert not ctx.cancelled.is_set()
        assert ctx.resume_state is None
        assert dict(ctx.dependency_results) == {}
        assert ctx.workdir.is_dir()


def test_records_progress_calls_in_order():
    """progress() calls are kept as (fraction, message) pairs."""
    with RecordingContext() as ctx:
        ctx.progress(0.25)
        ctx.progress(1, "done")
    assert ctx.progress_calls == [(0.25, ""), (1.0, "done")]
    assert ctx.fractions == [0.25, 1.0]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_progress_outside_zero_to_one_is_refused(fraction):
    """A fraction outside [0, 1] raises ValueError, as the queue refuses it."""
    with RecordingContext() as ctx, pytest.raises(ValueError, match="between 0 and 1"):
        ctx.progress(fraction)


def test_checkpoints_are_recorded_as_json_copies():
    """checkpoint() keeps a JSON round trip of the state with the task id, session and attempt."""
    task = Task(id="t1", attempts=2, context=TaskContext(session_id="s1"))
    state = {"items": (1, 2), "nested": {"k": "v"}}
    with RecordingContext(task=task) as ctx:
        ctx.progress(0.5)
        first = ctx.checkpoint(state)
        second = ctx.checkpoint({"n": 2}, progress=0.75)
    state["nested"]["k"] = "changed"
    assert [c.id for c in ctx.checkpoints] == [first, second]
    assert ctx.checkpoint_states == [{"items": [1, 2], "nested": {"k": "v"}}, {"n": 2}]
    one = ctx.checkpoints[0]
    assert (one.task_id, one.session_id, one.attempt, one.progress) == ("t1", "s1", 2, 0.5)
    assert ctx.checkpoints[1].progress == 0.75


def test_state_that_is_not_json_is_refused():
    """A checkpoint state that cannot be stored as JSON raises TypeError."""
    with RecordingContext() as ctx, pytest.raises(TypeError):
        ctx.checkpoint({"handle": object()})


def test_log_is_named_after_the_task_and_records_messages(caplog):
    """ctx.log is ``shim.task.<id>``; its messages land in ctx.logs and still propagate."""
    with RecordingContext(task=Task(id="t7")) as ctx, caplog.at_level(logging.INFO):
        ctx.log.debug("debug %d", 1)
        ctx.log.info("hello %s", "world")
    assert ctx.log.name == "shim.task.t7"
    assert ctx.logs == ["debug 1", "hello world"]
    assert "hello world" in caplog.messages


def test_contexts_of_the_same_task_keep_separate_logs():
    """Two contexts for one task id never receive each other's log records."""
    with (
        RecordingContext(task=Task(id="same")) as one,
        RecordingContext(task=Task(id="same")) as two,
    ):
        one.log.info("first")
        two.log.info("second")
    assert (one.logs, two.logs) == (["first"], ["second"])


def test_default_workdir_is_removed_on_close_but_a_given_one_is_kept(tmp_path):
    """close() deletes the temporary workdir it created and leaves a caller's directory alone."""
    with RecordingContext() as ctx:
        (ctx.workdir / "f.txt").write_text("x")
        created = ctx.workdir
    assert not created.exists()
    with RecordingContext(workdir=tmp_path) as ctx:
        assert ctx.workdir == tmp_path
    assert tmp_path.is_dir()


def test_fields_can_be_given():
    """Resume state, dependency results, worker id and a pre-set cancel event are taken as given."""
    event = threading.Event()
    event.set()
    deps = {"d1": TaskResult(success=True, output=1)}
    with RecordingContext(
        resume_state={"step": 3}, dependency_results=deps, worker_id="w2", cancelled=event
    ) as ctx:
        assert ctx.resume_state == {"step": 3}
        assert (ctx.dependency_results, ctx.worker_id) == (deps, "w2")
        assert ctx.cancelled.is_set()
