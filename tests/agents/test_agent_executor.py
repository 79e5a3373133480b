"""The agent executor on a stand-in CLI: outcomes, sessions, worktrees, prompts, kills.

The real CLIs are driven in test_claude_offline.py, test_codex_offline.py and
test_agent_fleet.py; here the CLI is tests/agents/fake_agent.py through the generic adapter, so
each behaviour can be forced."""

import subprocess
import sys
import threading
from pathlib import Path

import attrs
import pytest

from shim_core.models import Task, TaskContext, TaskOutcome
from shim_core.testing import RecordingContext
from shim_core.worktrees import merge_run, task_branch
from shim_plugins.agents import ClaudeAdapter, GenericAdapter
from shim_plugins.executors.agent import AgentExecutor

FAKE = str(Path(__file__).with_name("fake_agent.py"))
ADAPTERS = {"generic": GenericAdapter(), "claude": ClaudeAdapter()}


def fake_params(mode="ok", **extra):
    return {
        "agent": "generic",
        "argv": [sys.executable, FAKE, "{prompt}"],
        "resume_argv": [sys.executable, FAKE, "{prompt}", "--resume", "{session}"],
        "format": "stream-json",
        "env": {"FAKE_AGENT_MODE": mode},
        **extra,
    }


def run(task, tmp_path, **ctx_args):
    ctx = RecordingContext(task=task, workdir=tmp_path, agent_adapters=ADAPTERS, **ctx_args)
    with ctx:
        return AgentExecutor(worktree_root=tmp_path / "trees").execute(task, ctx), ctx


def make_repo(path):
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"],
                 ["config", "user.name", "t"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    )
    return head.stdout.strip()


def git_out(path, *args):
    return subprocess.run(
        ["git", *args], cwd=path, capture_output=True, text=True, check=False
    ).stdout


def test_a_successful_run_reports_summary_session_cost_tokens_and_turns(tmp_path):
    """The stream's result becomes a typed success with the output the issue specifies."""
    result, ctx = run(Task(id="t", executor="agent", params=fake_params()), tmp_path)
    assert result.success, result.error
    assert result.outcome is TaskOutcome.SUCCESS
    out = result.output
    assert out["agent"] == "generic"
    assert out["summary"] == "Wrote out.txt."
    assert out["cost_usd"] == 0.05
    assert out["tokens"] == {"input": 120, "output": 30}
    assert out["turns"] == 2
    assert out["session_id"]
    assert result.cost_usd == 0.05
    assert ctx.checkpoint_states[0]["session_id"] == out["session_id"]
    assert any("future_event_kind" in line for line in ctx.logs)  # unknown events kept
    assert ctx.progress_calls


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        ("no-result", TaskOutcome.FAILED),
        ("rate-limit", TaskOutcome.RATE_LIMITED),
        ("auth", TaskOutcome.AUTH_FAILED),
        ("crash", TaskOutcome.CRASHED),
    ],
)
def test_outcomes_come_from_the_stream_and_the_exit_status_together(tmp_path, mode, outcome):
    """No final result (even with exit 0) is a failure; the stream's words type the rest."""
    result, _ = run(Task(id="t", executor="agent", params=fake_params(mode)), tmp_path)
    assert not result.success
    assert result.outcome is outcome
    if outcome is TaskOutcome.RATE_LIMITED:
        assert result.retry_at_ms is not None


def test_a_silent_agent_is_killed_as_stalled(tmp_path):
    """No output for idle_timeout: the process group is killed and the outcome is stalled."""
    params = fake_params("hang", idle_timeout=0.5)
    result, _ = run(Task(id="t", executor="agent", params=params), tmp_path)
    assert result.outcome is TaskOutcome.STALLED
    assert "no output for 0.5 s" in result.error


def test_timeout_and_cancel_kill_the_agent(tmp_path):
    """timeout ends it as timed_out; a cancellation as cancelled."""
    result, _ = run(
        Task(id="t", executor="agent", params=fake_params("hang", timeout=0.5)), tmp_path
    )
    assert result.outcome is TaskOutcome.TIMED_OUT
    task = Task(id="c", executor="agent", params=fake_params("hang"))
    ctx = RecordingContext(task=task, workdir=tmp_path, agent_adapters=ADAPTERS)
    threading.Timer(0.5, ctx.cancelled.set).start()
    result = AgentExecutor().execute(task, ctx)
    assert result.outcome is TaskOutcome.CANCELLED


def test_a_missing_cli_or_adapter_fails_fast_as_cli_missing(tmp_path):
    """The binary is looked up before anything runs; so is the adapter."""
    task = Task(id="t", executor="agent", params={"agent": "claude", "command": "no-such-claude"})
    result, _ = run(task, tmp_path)
    assert result.outcome is TaskOutcome.CLI_MISSING
    assert result.error == "agent CLI 'no-such-claude' not found on PATH"
    result, _ = run(Task(id="t", executor="agent", params={"agent": "nope"}), tmp_path)
    assert result.outcome is TaskOutcome.CLI_MISSING
    assert "adapter 'nope' is not installed" in result.error
    generic = {"agent": "generic", "argv": ["no-such-agent-cli", "{prompt}"]}
    result, _ = run(Task(id="t", executor="agent", params=generic), tmp_path)
    assert result.outcome is TaskOutcome.CLI_MISSING
    assert result.error == "agent CLI 'no-such-agent-cli' not found"


@pytest.mark.parametrize(
    "params",
    [{}, {"agent": "generic", "argv": "not a list"}, {"agent": "claude", "max_turns": "x"}],
)
def test_bad_params_fail_cleanly(tmp_path, params):
    result, _ = run(Task(id="t", executor="agent", params=params), tmp_path)
    assert not result.success
    assert result.error


def test_a_checkpointed_session_is_resumed(tmp_path):
    """With a checkpoint of the same agent, the next attempt resumes that session."""
    task = Task(id="t", executor="agent", params=fake_params())
    state = {"agent": "generic", "session_id": "s-123"}
    result, ctx = run(task, tmp_path, resume_state=state)
    assert result.success
    assert result.output["session_id"] == "s-123"
    assert "resumed" in (tmp_path / "out.txt").read_text()
    assert any("resuming generic session s-123" in line for line in ctx.logs)


def test_a_lost_session_starts_fresh_with_notes(tmp_path):
    """A resume that fails ("No conversation found") is not a success: a fresh session starts
    with a note that an earlier attempt was interrupted."""
    task = Task(id="t", executor="agent", params=fake_params("lost-session"))
    result, ctx = run(task, tmp_path, resume_state={"agent": "generic", "session_id": "gone"})
    assert result.success
    assert result.output["session_id"] != "gone"
    assert "earlier attempt" in (tmp_path / "out.txt").read_text()
    assert any("could not be resumed" in line for line in ctx.logs)


def worktree_task(repo, base, plan_id, deps=(), **params):
    return Task(
        id=f"run1:{plan_id}",
        run_id="run1",
        title=f"Task {plan_id}",
        description=f"Do {plan_id}.",
        executor="agent",
        dependencies=tuple(f"run1:{d}" for d in deps),
        params=fake_params(env={"FAKE_AGENT_FILE": f"{plan_id}.txt"}, **params),
        context=TaskContext(repo=str(repo), base=base, workspace="worktree", acceptance=("x",)),
    )


def test_tasks_work_in_worktrees_see_their_dependencies_and_merge_in_order(tmp_path):
    """Each task commits on shim/<run>/<task> from base + its dependencies' branches; the
    user's checkout is untouched; the run merges in dependency order."""
    repo = tmp_path / "repo"
    base = make_repo(repo)
    (repo / "mine.txt").write_text("uncommitted work of the user\n")
    a, _ = run(worktree_task(repo, base, "a"), tmp_path)
    assert a.success, a.error
    assert a.output["branch"] == task_branch("run1", "a")
    assert a.files_modified == ("a.txt",)
    deps = {"run1:a": a}
    b, _ = run(worktree_task(repo, base, "b", deps=("a",)), tmp_path, dependency_results=deps)
    assert b.success, b.error
    assert b.files_modified == ("b.txt",)
    prompt = git_out(repo, "show", f"{b.output['commit']}:b.txt")  # the fake writes its prompt
    assert "Already done by the tasks this one depends on" in prompt
    assert "Wrote a.txt." in prompt
    assert "Done means" in prompt
    assert git_out(repo, "show", f"{task_branch('run1', 'b')}:a.txt")  # b sees a's work
    assert git_out(repo, "status", "--porcelain") == "?? mine.txt\n"
    assert git_out(repo, "branch", "--show-current").strip() == "main"
    assert not [p for p in (tmp_path / "trees").glob("*/run1/*") if p.is_dir()]  # removed
    merged = merge_run(str(repo), base, "run1", ["a", "b"], root=tmp_path / "trees")
    assert merged.merged == ("a", "b")
    assert merged.conflicts == ()
    files = git_out(repo, "ls-tree", "--name-only", merged.branch).split()
    assert files == ["README.md", "a.txt", "b.txt"]


def test_a_merge_conflict_is_reported_and_every_branch_kept(tmp_path):
    """Two tasks writing the same file: the second one's merge stops with its files named."""
    repo = tmp_path / "repo"
    base = make_repo(repo)
    for plan_id in ("x", "y"):
        task = worktree_task(repo, base, plan_id)
        task = attrs.evolve(task, params=fake_params(env={"FAKE_AGENT_FILE": "same.txt"}))
        result, _ = run(task, tmp_path)
        assert result.success, result.error
    report = merge_run(str(repo), base, "run1", ["x", "y"], root=tmp_path / "trees")
    assert report.merged == ("x",)
    assert [(c.task, c.files) for c in report.conflicts] == [("y", ("same.txt",))]
    assert git_out(repo, "rev-parse", "--verify", task_branch("run1", "y")).strip()


def test_workers_on_other_machines_share_a_url_repository(tmp_path):
    """With a git URL, each worker works in its own cached clone and pushes the task branch;
    a dependent on another "machine" (cache folder) starts from the pushed branch, and the
    merge reads the pushed branches and pushes the merged one."""
    origin = tmp_path / "origin"
    base = make_repo(origin)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin), str(remote)], check=True)
    url = remote.as_uri()

    def on_machine(name, plan_id, deps=(), results=None):
        task = attrs.evolve(
            worktree_task(url, base, plan_id, deps),
            context=TaskContext(repo=url, base=base, workspace="worktree"),
        )
        ctx = RecordingContext(
            task=task, workdir=tmp_path, agent_adapters=ADAPTERS,
            dependency_results=results or {},
        )  # fmt: skip
        with ctx:
            return AgentExecutor(worktree_root=tmp_path / name).execute(task, ctx)

    a = on_machine("machine-1", "a")
    assert a.success, a.error
    b = on_machine("machine-2", "b", deps=("a",), results={"run1:a": a})
    assert b.success, b.error
    assert git_out(remote, "show", f"{task_branch('run1', 'b')}:a.txt")
    report = merge_run(url, base, "run1", ["a", "b"], root=tmp_path / "machine-3")
    assert report.merged == ("a", "b")
    files = git_out(remote, "ls-tree", "--name-only", report.branch).split()
    assert files == ["README.md", "a.txt", "b.txt"]


def test_clean_removes_left_over_worktrees_and_keeps_branches(tmp_path):
    """A crashed worker's worktree stays until `shim clean --worktrees`; a later attempt on the
    same machine reuses it."""
    from shim_core.worktrees import WorktreeBusy, Worktrees

    repo = tmp_path / "repo"
    base = make_repo(repo)
    trees = Worktrees(str(repo), tmp_path / "trees")
    first = trees.prepare("run1", "a", base, [])
    (first.path / "work.txt").write_text("half done\n")
    with pytest.raises(WorktreeBusy):  # its execution still runs
        trees.prepare("run1", "a", base, [])
    assert trees.clean() == 0  # nor does clean touch it
    trees.release(first)  # as the process's death would
    again = trees.prepare("run1", "a", base, [])  # the next attempt after a crash
    assert again.path == first.path
    assert (again.path / "work.txt").exists()
    trees.release(again)
    assert trees.clean() == 1
    assert not first.path.exists()
    assert git_out(repo, "rev-parse", "--verify", task_branch("run1", "a")).strip()


def test_a_cancelled_attempt_commits_its_work_for_the_next_one(tmp_path):
    """Cancelled mid-run (lease lost, shutdown, time limit): what the agent wrote is committed
    on the task branch, and the next attempt starts from it."""
    repo = tmp_path / "repo"
    base = make_repo(repo)
    task = worktree_task(repo, base, "a")
    env = {"FAKE_AGENT_MODE": "write-then-hang", "FAKE_AGENT_FILE": "a.txt"}
    task = attrs.evolve(task, params=fake_params(env=env))
    ctx = RecordingContext(task=task, workdir=tmp_path, agent_adapters=ADAPTERS)
    threading.Timer(1.5, ctx.cancelled.set).start()
    result = AgentExecutor(worktree_root=tmp_path / "trees").execute(task, ctx)
    assert result.outcome is TaskOutcome.CANCELLED
    assert result.files_modified == ("a.txt",)
    assert git_out(repo, "show", f"{task_branch('run1', 'a')}:a.txt") == "half done\n"
    again, _ = run(worktree_task(repo, base, "a"), tmp_path)
    assert again.success, again.error
    assert again.files_modified == ("a.txt",)


def test_a_lost_session_in_a_worktree_is_told_what_the_branch_holds(tmp_path):
    """After a failed resume in a worktree, the fresh session's prompt lists the branch's
    commits and uncommitted changes from the earlier attempt."""
    from shim_core.worktrees import Worktrees

    repo = tmp_path / "repo"
    base = make_repo(repo)
    trees = Worktrees(str(repo), tmp_path / "trees")
    earlier = trees.prepare("run1", "a", base, [])
    (earlier.path / "done.txt").write_text("committed\n")
    trees.commit(earlier, "earlier work")
    (earlier.path / "wip.txt").write_text("uncommitted\n")
    trees.release(earlier)  # the earlier attempt's worker died
    task = attrs.evolve(
        worktree_task(repo, base, "a"),
        params=fake_params(env={"FAKE_AGENT_MODE": "lost-session", "FAKE_AGENT_FILE": "a.txt"}),
    )
    result, _ = run(task, tmp_path, resume_state={"agent": "generic", "session_id": "gone"})
    assert result.success, result.error
    prompt = git_out(repo, "show", f"{result.output['commit']}:a.txt")
    assert "Continue from the work it left on this branch." in prompt
    assert "earlier work" in prompt
    assert "wip.txt" in prompt


def test_a_workspace_missing_on_this_worker_fails_clearly(tmp_path):
    task = Task(
        id="t",
        executor="agent",
        params=fake_params(),
        context=TaskContext(project_path=str(tmp_path / "elsewhere"), workspace="shared"),
    )
    result, _ = run(task, tmp_path)
    assert result.outcome is TaskOutcome.FAILED
    assert result.error.endswith("does not exist on this worker")


def test_a_resumed_session_is_charged_only_for_what_it_added(tmp_path):
    """Claude Code reports a resumed session's whole cost: the executor subtracts what the
    checkpoint says the session had cost before (0.02 of the fake's 0.05)."""
    wrapper = tmp_path / "claude-like"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    wrapper.chmod(0o755)
    params = {"agent": "claude-like"}
    adapters = {
        "claude-like": attrs.evolve(ClaudeAdapter(), name="claude-like", command=str(wrapper))
    }
    task = Task(id="t", executor="agent", params=params)
    earlier = {"agent": "claude-like", "session_id": "s-1", "cost_usd": 0.02}
    ctx = RecordingContext(
        task=task, workdir=tmp_path, agent_adapters=adapters, resume_state=earlier
    )
    with ctx:
        result = AgentExecutor().execute(task, ctx)
    assert result.success, result.error
    assert result.cost_usd == pytest.approx(0.03)
    assert ctx.checkpoint_states[-1]["cost_usd"] == 0.05  # the session's total, for next time


def test_a_forged_session_id_never_reaches_the_command_line():
    """The session to resume comes from a checkpoint (data in Redis): only ids shaped like a
    CLI's session id are passed on; '--flag' would be read as an option."""
    from shim_plugins.executors.agent import _SESSION_ID

    for good in ("0199f3c2-5b1e-7c40-9d8e-1f2a3b4c5d6e", "ses_01JXYZ", "abc.def:1"):
        assert _SESSION_ID.match(good)
    for bad in ("--dangerously-bypass-approvals-and-sandbox", "-x", "a b", "", "a;rm"):
        assert not _SESSION_ID.match(bad)
