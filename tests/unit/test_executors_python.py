"""The ``python`` executor: resolving ``module:callable``, calling it, wrapping what it returns."""

import pytest

from shim_core import Task, TaskResult
from shim_core.testing import RecordingContext
from shim_plugins.executors import PythonExecutor

HERE = __name__


def double(task, ctx):
    ctx.progress(0.5, "halfway")
    ctx.log.info("doubling %s", task.params["n"])
    return {"n": task.params["n"] * 2, "worker": ctx.worker_id}


def explicit_result(task, ctx):
    return TaskResult(success=False, error="declined", output=[1, 2])


def explode(task, ctx):
    raise RuntimeError("kaboom")


def not_json(task, ctx):
    return {"handle": object()}


def nothing(task, ctx):
    return None


class Tools:
    @staticmethod
    def greet(task, ctx):
        return f"hello {task.id}"


NOT_CALLABLE = 42


def run(function, **params):
    task = Task(id="t1", executor="python", params={"function": function, **params})
    with RecordingContext(task=task, worker_id="w9") as ctx:
        return PythonExecutor().execute(task, ctx), ctx


def test_calls_the_function_with_task_and_context_and_wraps_its_value():
    """A plain return value becomes a successful result's output; the function sees task and ctx."""
    result, ctx = run(f"{HERE}:double", n=21)
    assert result == TaskResult(success=True, output={"n": 42, "worker": "w9"})
    assert ctx.progress_calls == [(0.5, "halfway")]
    assert ctx.logs == ["doubling 21"]


def test_a_returned_task_result_is_used_as_it_is():
    """When the function returns a TaskResult the executor passes it through unchanged."""
    result, _ = run(f"{HERE}:explicit_result")
    assert result == TaskResult(success=False, error="declined", output=[1, 2])


def test_dotted_attribute_path_after_the_colon():
    """``module:Class.method`` resolves attributes one by one."""
    result, _ = run(f"{HERE}:Tools.greet")
    assert result.output == "hello t1"


def test_none_is_a_successful_empty_output():
    """A function returning None succeeds with output None."""
    result, _ = run(f"{HERE}:nothing")
    assert result == TaskResult(success=True, output=None)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (None, "package.module:callable"),
        (42, "package.module:callable"),
        ("no_colon_here", "package.module:callable"),
        ("a:b:c", "package.module:callable"),
        (":double", "package.module:callable"),
        (f"{HERE}:", "package.module:callable"),
        ("tests.unit.no_such_module_xyz:f", "no module named 'tests.unit.no_such_module_xyz'"),
        ("no_such_package_xyz.sub:f", "no module named 'no_such_package_xyz'"),
        (f"{HERE}:missing_function", "'missing_function' not found"),
        (f"{HERE}:Tools.missing", "'missing' not found"),
        (f"{HERE}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_bad_references_give_a_clear_failed_result(function, message):
    """A reference that cannot be resolved fails the attempt with an error, not a traceback."""
    result, ctx = run(function)
    assert not result.success
    assert message in result.error
    assert ctx.logs == [result.error]


def test_module_whose_import_fails_gives_a_clear_failed_result(tmp_path, monkeypatch):
    """A module that exists but cannot be imported (a missing dependency, an error) is reported."""
    (tmp_path / "shim_broken_dep_mod.py").write_text("import shim_missing_dependency_xyz\n")
    (tmp_path / "shim_raising_mod.py").write_text("raise ValueError('bad config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result, _ = run("shim_broken_dep_mod:f")
    assert not result.success
    assert "importing 'shim_broken_dep_mod' failed" in result.error
    assert "shim_missing_dependency_xyz" in result.error
    result, _ = run("shim_raising_mod:f")
    assert "ValueError: bad config" in result.error


def test_exception_raised_by_the_function_propagates():
    """An exception from the function itself fails the attempt the ordinary way (it is raised)."""
    with pytest.raises(RuntimeError, match="kaboom"):
        run(f"{HERE}:explode")


def test_a_value_that_is_not_json_fails_cleanly():
    """A return value that cannot be stored as JSON gives a failed result naming the function."""
    result, _ = run(f"{HERE}:not_json")
    assert not result.success
    assert f"{HERE}:not_json returned a value that is not JSON" in result.error
