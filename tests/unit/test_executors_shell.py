"""The ``shell`` executor: exit codes, output, progress lines, timeouts and cancellation that end
the whole process group, environment, working directory and the files a command changed."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shim_core import Task, TaskContext
from shim_core.testing import RecordingContext
from shim_plugins.executors import ShellExecutor
from tests.helpers import wait_until

# Starts a grandchild ``sleep`` in the command's process group, records its pid, then waits.
GRANDCHILD = "sleep 300 & echo $! > {pidfile}; wait"


def shell_task(command, project_path="", timeout_ms=None, **params):
    return Task(
        executor="shell",
        params={"command": command, **params},
        context=TaskContext(project_path=str(project_path)),
        timeout_ms=timeout_ms,
    )


def run(task, executor=None, **ctx_kwargs):
    with RecordingContext(task=task, **ctx_kwargs) as ctx:
        return (executor or ShellExecutor()).execute(task, ctx), ctx


def gone(pid):
    """True once ``pid`` no longer runs (a zombie awaiting a non-reaping init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def read_pid(pidfile):
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return int(text) if text else None


def test_exit_code_zero_succeeds_with_output_tail():
    """A command exiting 0 succeeds; output holds the exit code and its lines."""
    result, ctx = run(shell_task("echo one; echo two"))
    assert result.success
    assert result.error is None
    assert result.output == {"exit_code": 0, "tail": ["one", "two"]}
    assert ctx.logs == ["one", "two"]


def test_nonzero_exit_code_fails_and_names_the_code():
    """A command exiting 3 fails with an error mentioning the exit code."""
    result, _ = run(shell_task("echo oops >&2; exit 3"))
    assert not result.success
    assert result.output == {"exit_code": 3, "tail": ["oops"]}
    assert "exit code 3" in result.error


def test_tail_keeps_the_last_twenty_lines_and_the_log_keeps_all():
    """The output tail is the last 20 lines, while every line goes to the task log."""
    result, ctx = run(shell_task("seq 1 30"))
    assert result.output["tail"] == [str(i) for i in range(11, 31)]
    assert ctx.logs == [str(i) for i in range(1, 31)]


def test_progress_lines_report_progress_and_are_not_output():
    """``::progress 0.4 msg`` lines call ctx.progress and stay out of the log and the tail."""
    command = "echo '::progress 0.4 some message'; echo hello; echo '::progress 1'"
    result, ctx = run(shell_task(command))
    assert ctx.progress_calls == [(0.4, "some message"), (1.0, "")]
    assert result.output["tail"] == ["hello"]
    assert ctx.logs == ["hello"]


def test_malformed_progress_lines_are_ordinary_output():
    """A progress directive without a number is logged as output; out-of-range ones are clamped."""
    command = "echo '::progress soon'; echo '::progress nan'; echo '::progress 7 over'"
    result, ctx = run(shell_task(command))
    assert result.output["tail"] == ["::progress soon", "::progress nan"]
    assert ctx.progress_calls == [(1.0, "over")]


class RefusingContext(RecordingContext):
    def progress(self, fraction, message=""):
        raise RuntimeError("lease lost")


def test_a_failing_progress_report_is_logged_and_output_keeps_flowing():
    """When ctx.progress raises, the error is logged and the following lines are still read."""
    task = shell_task("echo '::progress 0.5 half'; echo after")
    with RefusingContext(task=task) as ctx:
        result = ShellExecutor().execute(task, ctx)
    assert result.success
    assert ctx.logs == ["progress report failed: RuntimeError: lease lost", "after"]


def test_argument_list_runs_without_a_shell():
    """A list command is executed directly, with no shell expansion of its arguments."""
    result, _ = run(shell_task([sys.executable, "-c", "import sys; print(sys.argv[1])", "$HOME"]))
    assert result.output["tail"] == ["$HOME"]


def test_env_is_added_and_cwd_is_the_project_path(tmp_path):
    """Variables from params.env reach the command, which runs in task.context.project_path."""
    task = shell_task('echo "$GREETING"; pwd', project_path=tmp_path, env={"GREETING": "hello"})
    result, _ = run(task)
    assert result.output["tail"] == ["hello", str(tmp_path.resolve())]


def test_env_none_removes_a_variable(monkeypatch):
    """A null value in params.env removes the variable from the command's environment."""
    monkeypatch.setenv("SHIM_TEST_SECRET", "s3cret")
    result, _ = run(shell_task('echo "[$SHIM_TEST_SECRET]"', env={"SHIM_TEST_SECRET": None}))
    assert result.output["tail"] == ["[]"]


def test_cwd_defaults_to_the_context_workdir(tmp_path):
    """Without a project path the command runs in ctx.workdir."""
    result, _ = run(shell_task("pwd"), workdir=tmp_path)
    assert result.output["tail"] == [str(tmp_path.resolve())]


def test_timeout_kills_the_whole_process_group(tmp_path):
    """On timeout the command and its grandchild ``sleep`` are killed and the error says so."""
    pidfile = tmp_path / "pid"
    result, _ = run(shell_task(GRANDCHILD.format(pidfile=pidfile), timeout=1.5))
    assert not result.success
    assert "timed out after 1.5 s" in result.error
    pid = read_pid(pidfile)
    assert pid is not None
    wait_until(lambda: gone(pid))


def test_timeout_defaults_to_the_task_timeout(tmp_path):
    """Without a timeout param, task.timeout_ms limits the command."""
    result, _ = run(shell_task("sleep 300", timeout_ms=300))
    assert not result.success
    assert "timed out after 0.3 s" in result.error


def test_group_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    """A grandchild that ignores SIGTERM is SIGKILLed once the grace period is over."""
    pidfile = tmp_path / "pid"
    command = "trap '' TERM; " + GRANDCHILD.format(pidfile=pidfile)
    result, _ = run(shell_task(command, timeout=1), executor=ShellExecutor(kill_grace=0.2))
    assert "timed out" in result.error
    pid = read_pid(pidfile)
    wait_until(lambda: gone(pid))


def test_cancellation_kills_the_process_group(tmp_path):
    """Setting ctx.cancelled ends the command and its grandchildren; the result says cancelled."""
    pidfile = tmp_path / "pid"
    task = shell_task(GRANDCHILD.format(pidfile=pidfile))
    ctx = RecordingContext(task=task, workdir=tmp_path)
    results = []
    runner = threading.Thread(target=lambda: results.append(ShellExecutor().execute(task, ctx)))
    runner.start()
    pid = wait_until(lambda: read_pid(pidfile))
    ctx.cancelled.set()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert not results[0].success
    assert results[0].error.startswith("cancelled")
    wait_until(lambda: gone(pid))


def test_cancelled_before_start_never_runs_the_command(tmp_path):
    """A context cancelled beforehand returns at once without starting the command."""
    ctx = RecordingContext(task=shell_task("touch ran"), workdir=tmp_path)
    ctx.cancelled.set()
    result = ShellExecutor().execute(ctx.task, ctx)
    assert "cancelled" in result.error
    assert not (tmp_path / "ran").exists()


def test_background_leftovers_are_ended_when_the_command_exits(tmp_path):
    """A process the command leaves running in its group does not outlive the task."""
    pidfile = tmp_path / "pid"
    result, _ = run(shell_task(f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}"))
    assert result.success
    wait_until(lambda: gone(read_pid(pidfile)))


def test_output_held_open_by_an_escaped_process_does_not_block_the_result(tmp_path):
    """A process that left the group (setsid) and keeps the output open does not delay the end."""
    # The command exits only once the escaped shell runs in its new session.
    command = (
        "setsid sh -c 'echo $$ > escaped; exec sleep 3' & "
        "while [ ! -s escaped ]; do sleep 0.01; done; echo started"
    )
    task = shell_task(command, project_path=tmp_path)
    result, ctx = run(task, executor=ShellExecutor(kill_grace=0.2))
    os.kill(read_pid(tmp_path / "escaped"), signal.SIGTERM)
    assert result.success
    assert any("tail may be short" in line for line in ctx.logs)


def test_signal_death_is_reported():
    """A command killed by a signal fails with the signal's name."""
    result, _ = run(shell_task("kill -KILL $$"))
    assert not result.success
    assert result.output["exit_code"] == -9
    assert "SIGKILL" in result.error


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"command": ""}, "param 'command'"),
        ({"command": []}, "param 'command'"),
        ({"command": ["ls", None]}, "param 'command'"),
        ({"command": "true", "timeout": 0}, "param 'timeout'"),
        ({"command": "true", "env": ["A=1"]}, "param 'env'"),
        ({"command": "true", "env": {"A": {"nested": 1}}}, "param 'env'"),
        ({"command": "true", "env": {"A=B": "1"}}, "param 'env'"),
    ],
)
def test_bad_params_fail_cleanly(params, message):
    """Unusable params give a failed result naming the param."""
    task = Task(executor="shell", params=params)
    result, _ = run(task)
    assert not result.success
    assert message in result.error


def test_missing_program_or_directory_fails_cleanly(tmp_path):
    """A program that does not exist, or a project path that cannot be made, gives a failed
    result; a missing project path (a plan's ``workdir``) is made."""
    result, _ = run(shell_task(["/nonexistent/program-xyz"]))
    assert "cannot start '/nonexistent/program-xyz'" in result.error
    (tmp_path / "a-file").write_text("")
    result, _ = run(shell_task("true", project_path=tmp_path / "a-file" / "sub"))
    assert "cannot start" in result.error
    result, _ = run(shell_task("true", project_path=tmp_path / "made" / "here"))
    assert result.success
    assert (tmp_path / "made" / "here").is_dir()


def git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    """A git repository with a committed a.txt and an uncommitted change to dirty.txt."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.txt").write_text("a\n")
    (root / "dirty.txt").write_text("1\n")
    (root / "old.txt").write_text("old\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    (root / "dirty.txt").write_text("2\n")
    return root


def test_files_modified_lists_new_and_changed_paths_in_a_git_tree(repo):
    """Files the command modifies or creates are reported, sorted; untouched dirty files are not."""
    command = "echo more >> a.txt; echo new > b.txt; mkdir -p d; echo e > d/e.txt; rm old.txt"
    result, _ = run(shell_task(command, project_path=repo))
    assert result.success
    assert result.files_modified == ("a.txt", "b.txt", "d/e.txt", "old.txt")


def test_files_modified_sees_a_second_change_to_a_dirty_file(repo):
    """A file that was already modified before the run and is changed again is reported."""
    result, _ = run(shell_task("echo 3 >> dirty.txt", project_path=repo))
    assert result.files_modified == ("dirty.txt",)


def test_files_modified_paths_are_relative_to_the_repository_root(repo):
    """Run from a subdirectory, the paths are still relative to the work tree's root."""
    (repo / "sub").mkdir()
    result, _ = run(shell_task("echo x > x.txt", project_path=repo / "sub"))
    assert result.files_modified == ("sub/x.txt",)


def test_files_modified_is_empty_outside_a_git_tree(tmp_path):
    """Outside a git work tree no files are reported, even when the command writes some."""
    result, _ = run(shell_task("echo x > x.txt", project_path=tmp_path))
    assert result.success
    assert result.files_modified == ()


def test_the_workers_own_settings_stay_out_of_the_command(monkeypatch):
    """The fleet's Redis URL (with its password) and the signing keys are not the command's
    business; a task that needs a SHIM variable passes it in ``env``."""
    monkeypatch.setenv("SHIM_REDIS_URL", "redis://shim:topsecret@db:6379/0")
    monkeypatch.setenv("SHIM_SECRET", "k" * 32)
    result, _ = run(
        shell_task('echo "[$SHIM_REDIS_URL][$SHIM_SECRET][$SHIM_GIVEN]"', env={"SHIM_GIVEN": "yes"})
    )
    assert result.success
    assert result.output["tail"] == ["[][][yes]"]
