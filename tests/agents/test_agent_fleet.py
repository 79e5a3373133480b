"""Real agent CLIs driven through SHIM end to end, offline: ``shim run`` on a plan of agent
tasks in git worktrees, with the CLI talking to a scripted model server on loopback."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_shim.models import anthropic, openai
from tests.agents._support import git_files, make_repo, shim_run

CLAUDE = shutil.which("claude")
CODEX = shutil.which("codex")


@pytest.mark.skipif(CLAUDE is None, reason="the claude CLI is not installed")
def test_claude_agents_hand_results_down_the_dag_and_merge_in_order(tmp_path):
    """Two Claude Code tasks (b after a) in worktrees: b's prompt carries a's summary and
    files, the report has costs and tokens, and the branches merge into shim/<run>/@merged
    while the user's checkout stays as it was."""
    repo = tmp_path / "repo"
    make_repo(repo)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: agents\nrepo: repo\ndefaults:\n  executor: agent\n  params: {agent: claude}\n"
        "tasks:\n  - id: a\n    title: Write a.txt\n"
        "  - id: b\n    title: Write b.txt\n    deps: [a]\n    acceptance: [b.txt exists]\n"
    )
    script = [
        anthropic.ToolUse("Write", {"file_path": "a.txt", "content": "from a\n"}),
        anthropic.Text("Created a.txt with a greeting."),
        anthropic.ToolUse("Write", {"file_path": "b.txt", "content": "from b\n"}),
        anthropic.Text("Created b.txt."),
    ]
    with anthropic.ScriptedAnthropic(script) as server:
        env = {
            **anthropic.claude_env(server.url, str(tmp_path / "home")),
            "SHIM_WORKTREES": str(tmp_path / "trees"),
        }
        (tmp_path / "home").mkdir()
        code, report, err = shim_run(plan, env, tmp_path, "--workers", "2")
        requests = list(server.requests)
    assert code == 0, err
    tasks = {t["id"]: t for t in report["tasks"]}
    assert tasks["a"]["result"]["output"]["outcome"] == "success"
    assert tasks["a"]["result"]["files_modified"] == ["a.txt"]
    assert tasks["b"]["result"]["output"]["summary"] == "Created b.txt."
    assert tasks["b"]["result"]["output"]["tokens"]["input"] > 0
    assert report["cost_usd"] > 0
    b_prompt = json.dumps(requests[2]["messages"])
    assert "Created a.txt with a greeting." in b_prompt
    assert "a.txt" in b_prompt
    assert "b.txt exists" in b_prompt
    merge = report["merge"]
    assert merge["merged"] == ["a", "b"]
    assert merge["conflicts"] == []
    assert {"a.txt", "b.txt"} <= set(git_files(repo, merge["branch"]))
    assert git_files(repo, "main") == ["README.md"]


@pytest.mark.skipif(CODEX is None, reason="the codex CLI is not installed")
def test_codex_agent_runs_a_command_in_its_worktree(tmp_path):
    """A Codex task: the tool call runs in the task's worktree, its change is committed on the
    task branch and merged."""
    repo = tmp_path / "repo"
    make_repo(repo)
    script = [
        openai.ToolCall("exec_command", {"cmd": "echo hi > hello.txt"}),
        openai.Text("Created hello.txt."),
    ]
    with openai.ScriptedOpenAI(script) as server:
        plan = tmp_path / "plan.yaml"
        extra = json.dumps(openai.codex_args(server.url))
        plan.write_text(
            "name: codex\nrepo: repo\ntasks:\n  - id: hello\n    executor: agent\n"
            f"    params: {{agent: codex, extra_args: {extra}}}\n"
        )
        home = tmp_path / "codex-home"
        home.mkdir()
        env = {
            **openai.codex_env(str(home)),
            "SHIM_WORKTREES": str(tmp_path / "trees"),
        }
        code, report, err = shim_run(plan, env, tmp_path)
    assert code == 0, err
    result = report["tasks"][0]["result"]
    assert result["output"]["outcome"] == "success"
    assert result["output"]["summary"] == "Created hello.txt."
    assert result["files_modified"] == ["hello.txt"]
    assert "hello.txt" in git_files(repo, report["merge"]["branch"])


@pytest.mark.skipif(CLAUDE is None, reason="the claude CLI is not installed")
def test_the_readme_agent_example_runs_as_documented(tmp_path):
    """README's "Running a fleet of coding agents" commands, with the model scripted: the
    example plan on a copy of examples/agents/greeter, merged in dependency order."""
    example = Path(__file__).parents[2] / "examples" / "agents"
    repo = tmp_path / "greeter"
    shutil.copytree(example / "greeter", repo)
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*identity, "commit", "-qm", "i"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    script = []
    for name in ("greeter.py", "main.py", "test_greeter.py"):
        script += [
            anthropic.ToolUse("Write", {"file_path": name, "content": f"# {name}\n"}),
            anthropic.Text(f"Wrote {name}."),
        ]
    (tmp_path / "home").mkdir()
    with anthropic.ScriptedAnthropic(script) as server:
        env = {
            **anthropic.claude_env(server.url, str(tmp_path / "home")),
            "SHIM_WORKTREES": str(tmp_path / "trees"),
        }
        code, report, err = shim_run(example / "plan.yaml", env, repo, "--workers", "1")
    assert code == 0, err
    assert report["merge"]["merged"] == ["core", "cli", "tests"]
    assert {"main.py", "test_greeter.py"} <= set(git_files(repo, report["merge"]["branch"]))
