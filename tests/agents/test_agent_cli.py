"""The CLI around agent runs: plans written for review, merges redone, worktrees cleaned,
costs and merges in the text report. The agent is tests/agents/fake_agent.py (generic
adapter), so these run without any agent CLI installed."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from shim_core.cli import app
from shim_core.hookspecs import hookimpl
from shim_core.models import Task, TaskOutcome, TaskResult
from shim_core.outcomes import Action, decide
from shim_core.plugins import Plugins
from shim_plugins.agents import ClaudeAdapter
from tests.agents._support import git_files, make_repo, shim_run
from tests.helpers import wait_until

FAKE = str(Path(__file__).with_name("fake_agent.py"))


def fake_plan(tmp_path, repo, files=("a.txt", "b.txt")):
    tasks = "".join(
        f"  - id: {Path(name).stem}\n    title: Write {name}\n"
        f"    params: {{env: {{FAKE_AGENT_FILE: {name}}}}}\n"
        for name in files
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"name: fake\nrepo: {repo}\nbudget_usd: 10\ndefaults:\n  executor: agent\n"
        "  params:\n    agent: generic\n    format: stream-json\n"
        f"    argv: [{json.dumps(sys.executable)}, {json.dumps(FAKE)}, '{{prompt}}']\n"
        f"tasks:\n{tasks}"
    )
    return plan


def test_plan_output_writes_a_plan_file_that_runs_the_same(tmp_path):
    """`shim plan -o` writes YAML (or JSON) that reads back as the same plan."""
    runner = CliRunner()
    source = Path(__file__).parents[2] / "examples" / "agents" / "plan.yaml"
    for name in ("out.yaml", "out.json"):
        target = tmp_path / name
        result = runner.invoke(app, ["plan", str(source), "-o", str(target)])
        assert result.exit_code == 0, result.output
        data = (
            json.loads(target.read_text())
            if name.endswith("json")
            else yaml.safe_load(target.read_text())
        )
        assert [t["id"] for t in data["tasks"]] == ["core", "cli", "tests"]
        assert data["budget_usd"] == 5
        again = runner.invoke(app, ["plan", str(target), "--json"])
        assert again.exit_code == 0, again.output
    result = runner.invoke(app, ["plan", str(source), "-o", str(tmp_path / "no" / "x.yaml")])
    assert result.exit_code != 0


@pytest.mark.shim_real_redis  # `shim run` in a process of its own: an embedded store is not shared
def test_a_run_reports_costs_and_merge_and_shim_merge_redoes_it(tmp_path, shim_redis_url):
    """The text report shows what the agents spent and where the work was merged; `shim merge
    RUN` rebuilds the merged branch from the stored run."""
    repo = make_repo(tmp_path / "repo")
    plan = fake_plan(tmp_path, repo)
    env = {"SHIM_WORKTREES": str(tmp_path / "trees")}
    code, report, err = shim_run(plan, env, tmp_path, "--redis", shim_redis_url, "-w", "2")
    assert code == 0, (err, report)
    assert report["cost_usd"] == 0.1
    run_id = report["run_id"]
    runner = CliRunner()
    merged = runner.invoke(app, ["merge", run_id, "--redis", shim_redis_url], env=env)
    assert merged.exit_code == 0, merged.output
    assert f"Merged into shim/{run_id}/@merged" in merged.output
    assert "a, b" in merged.output
    as_json = runner.invoke(app, ["merge", run_id, "--redis", shim_redis_url, "--json"], env=env)
    assert json.loads(as_json.output)["merged"] == ["a", "b"]
    assert set(git_files(repo, f"shim/{run_id}/@merged")) >= {"a.txt", "b.txt"}
    status = runner.invoke(app, ["status", run_id, "--redis", shim_redis_url])
    assert "Agents spent $0.1000 of a $10 budget" in status.output
    assert "$0.0500" in status.output


@pytest.mark.shim_real_redis  # `shim run` in a process of its own: an embedded store is not shared
def test_merge_of_a_run_without_worktrees_is_refused(tmp_path, shim_redis_url):
    runner = CliRunner()
    plan = Path(__file__).parents[2] / "examples" / "auth_system.yaml"
    code, report, err = shim_run(plan, {}, tmp_path, "--redis", shim_redis_url, "-w", "2")
    assert code == 0, err
    result = runner.invoke(app, ["merge", report["run_id"], "--redis", shim_redis_url])
    assert "has no git worktrees to merge" in str(result.exception)


def test_clean_worktrees_needs_a_repository_and_removes_left_overs(tmp_path, monkeypatch):
    """`shim clean --worktrees` finds the repository of the current directory."""
    from shim_core.worktrees import Worktrees

    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("SHIM_WORKTREES", str(tmp_path / "trees"))
    head = git_head(repo)
    trees = Worktrees(str(repo))
    trees.release(trees.prepare("r1", "t1", head, []))  # a crashed worker's left-over
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["clean", "--worktrees"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("removed 1 worktree(s)")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["clean", "--worktrees"])
    assert "not inside a git repository" in str(result.exception)


def git_head(repo):
    import subprocess

    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_outcome_table():
    """Each outcome leads where the issue says (and where README's table says)."""
    agent_task = Task(id="t", executor="agent", agent="claude", max_attempts=3)

    def action(outcome, task=agent_task):
        result = TaskResult(success=outcome is TaskOutcome.SUCCESS, outcome=outcome)
        return decide(task, result, default_attempts=3)

    assert action(TaskOutcome.SUCCESS).action is Action.COMPLETE
    assert action(TaskOutcome.RATE_LIMITED).action is Action.THROTTLE
    assert action(TaskOutcome.RATE_LIMITED, Task(id="p")).action is Action.RETRY
    for refused in (TaskOutcome.AUTH_FAILED, TaskOutcome.CLI_MISSING):
        assert action(refused).action is Action.FAIL
        assert action(refused).refuse_agent
    for limit in (TaskOutcome.MAX_TURNS, TaskOutcome.BUDGET_EXCEEDED):
        assert action(limit).action is Action.FAIL
        assert action(limit, Task(id="t", agent="c", max_attempts=5)).action is Action.RETRY
    for plain in (TaskOutcome.STALLED, TaskOutcome.CRASHED, TaskOutcome.TIMED_OUT):
        assert action(plain).action is Action.RETRY
    inconsistent = TaskResult(success=False, outcome=TaskOutcome.SUCCESS)
    assert decide(agent_task, inconsistent, default_attempts=3).action is Action.RETRY


class _GhostAgent:
    """A plugin with an agent whose CLI is installed nowhere."""

    @hookimpl
    def shim_agent_adapters(self):
        return [ClaudeAdapter(name="ghost", command="shim-no-such-agent-cli")]


def test_a_worker_without_the_cli_stops_claiming_its_tasks_and_says_why(
    shim_fleet_factory, shim_queue, shim_redis_url
):
    """A missing CLI fails the task at once and the worker refuses that agent from then on;
    `shim workers` shows it, and its next task of that agent is left for other workers. A
    task that names its own binary fails alike but refuses nothing."""
    plugins = Plugins(extra=[_GhostAgent()])
    fleet = shim_fleet_factory(
        workers=1, mode="thread", heartbeat=0.5, plugins=plugins, allow=["agent"]
    )
    own = {"agent": "claude", "command": "no-such-claude"}
    shim_queue.add_many(
        [
            Task(id="own", executor="agent", params=own),
            Task(id="a", executor="agent", params={"agent": "ghost"}),
        ]
    )
    wait_until(lambda: shim_queue.get("a").status.is_final, timeout=30)
    assert shim_queue.get("own").result.error == "agent CLI 'no-such-claude' not found on PATH"
    task = shim_queue.get("a")
    assert task.attempts == 1
    assert task.result.outcome is TaskOutcome.CLI_MISSING
    worker = fleet.workers[0].id
    wait_until(lambda: fleet.registry.get_worker(worker).refused_agents, timeout=10)
    assert list(fleet.registry.get_worker(worker).refused_agents) == ["ghost"]
    shown = CliRunner().invoke(
        app, ["workers", "--redis", shim_redis_url, "-n", shim_queue.settings.namespace]
    )
    expected = "refuses ghost tasks: agent CLI 'shim-no-such-agent-cli' not found on PATH"
    assert expected in shown.output
    shim_queue.add(Task(id="b", executor="agent", params={"agent": "ghost"}))
    shim_queue.add(Task(id="c", executor="sim"))
    wait_until(lambda: shim_queue.get("c").status.is_final, timeout=30)
    assert shim_queue.get("b").status.value == "pending"
