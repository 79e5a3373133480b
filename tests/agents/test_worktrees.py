"""Finding the repository and base commit of a run, and the prompt an agent gets."""

import os
import subprocess

import pytest

from shim_core.models import Task, TaskContext, TaskResult
from shim_core.worktrees import MergeConflict, MergeReport, WorkspaceError, is_url, resolve_repo
from shim_plugins.executors._agent_prompt import build_prompt, load_template
from shim_plugins.executors._params import ParamError
from tests.agents._support import make_repo


def test_resolve_repo_finds_the_repository_around_a_directory(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "sub").mkdir()
    found = resolve_repo(None, repo / "sub")
    assert found is not None
    assert found.repo == str(repo.resolve())
    assert len(found.base) == 40
    assert resolve_repo(str(repo / "sub")) == found
    assert resolve_repo(None, tmp_path) is None  # no repository: agents run without worktrees


def test_resolve_repo_refuses_what_cannot_be_worked_on(tmp_path):
    with pytest.raises(WorkspaceError, match="not a directory"):
        resolve_repo(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=empty, check=True)
    with pytest.raises(WorkspaceError, match="no commit yet"):
        resolve_repo(str(empty))
    with pytest.raises(WorkspaceError, match="failed"):
        resolve_repo(str(tmp_path))  # a directory that is no repository, named explicitly


def test_resolve_repo_reads_the_head_of_a_url(tmp_path):
    origin = make_repo(tmp_path / "origin")
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin), str(bare)], check=True)
    found = resolve_repo(bare.as_uri())
    assert found is not None
    assert found.repo == bare.as_uri()
    assert is_url("git@github.com:me/app.git")
    assert is_url("https://example.com/a.git")
    assert not is_url("/srv/app")


def test_the_prompt_carries_the_task_its_criteria_and_its_dependencies(tmp_path):
    task = Task(
        id="r:b",
        title="Build b",
        description="Make b.",
        dependencies=("r:a", "r:z", "r:p"),
        context=TaskContext(files=("b.py",), acceptance=("tests pass",)),
    )
    results = {
        "r:a": TaskResult(
            success=True,
            output={"summary": "x" * 5000, "branch": "shim/r/a"},
            files_modified=tuple(f"f{i}" for i in range(60)),
        ),
        "r:p": TaskResult(success=True, output="plain output"),
    }
    prompt = build_prompt(task, results, load_template(None), notes="Earlier work: none.")
    assert "# Your task: Build b" in prompt
    assert "- b.py" in prompt
    assert "- tests pass" in prompt
    assert "### `a` (branch `shim/r/a`)" in prompt
    assert " [...]" in prompt  # a long summary is cut
    assert "and 10 more" in prompt
    assert "- `z`: no result recorded" in prompt
    assert "plain output" in prompt
    assert prompt.rstrip().endswith("Earlier work: none.")
    custom = tmp_path / "t.md"
    custom.write_text("Do $title for $id.\n$dependencies")
    assert build_prompt(task, {}, load_template(str(custom))).startswith("Do Build b for b.")
    with pytest.raises(ParamError, match="cannot read prompt template"):
        load_template(str(tmp_path / "missing.md"))
    huge = Task(id="h", description="y" * 200_000)
    assert len(build_prompt(huge, {}, load_template(None))) <= 100_000


def test_merge_reports_render_for_people():
    from shim_core.console import render_merge

    report = MergeReport(
        "shim/r/@merged", "0123456789abcdef", ("a",), (MergeConflict("b", ("x.py",), "c0ffee"),)
    )
    text = render_merge(report)
    assert text.startswith("Merged into shim/r/@merged (from 0123456789): a")
    assert "conflict merging task b: x.py" in text
    assert "shim merge" in text
    assert report.to_dict()["conflicts"] == [{"task": "b", "files": ["x.py"]}]


def test_a_dead_agents_tools_are_killed_before_the_worktree_is_reused(tmp_path):
    """A process left working inside a worktree (a test runner the agent started before its
    worker died) is killed when the next attempt takes the worktree."""
    from shim_core.worktrees import Worktrees

    repo = make_repo(tmp_path / "repo")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    trees = Worktrees(str(repo), tmp_path / "trees")
    first = trees.prepare("r", "t", head, [])
    marked = {**os.environ, "SHIM_WORKTREE": str(first.path)}
    left = subprocess.Popen(["sleep", "60"], cwd=first.path, env=marked)
    onlooker = subprocess.Popen(["sleep", "60"], cwd=first.path)  # a person's shell, say
    trees.release(first)
    again = trees.prepare("r", "t", head, [])
    assert left.wait(timeout=10) == -9
    assert onlooker.poll() is None
    onlooker.kill()
    onlooker.wait()
    trees.remove(again)


def test_agents_without_a_repository_work_in_the_submitters_directory(tmp_path, monkeypatch):
    """No git repository: agent tasks get the directory the run was submitted from, so their
    work is not lost in a temporary folder."""
    from shim_core.supervisor.plan import parse_plan
    from shim_core.supervisor.runs import tasks_of_plan

    monkeypatch.chdir(tmp_path)
    plan = parse_plan({"tasks": [{"id": "a", "executor": "agent"}, {"id": "b"}]}, "p.yaml")
    agent, plain = tasks_of_plan(plan, "r1", {}, None)
    assert agent.context.workspace == "shared"
    assert agent.context.project_path == str(tmp_path)
    assert plain.context.project_path == ""


def test_agents_do_not_inherit_shims_own_settings(monkeypatch):
    from shim_plugins.executors.agent import agent_environment

    monkeypatch.setenv("SHIM_REDIS_URL", "redis://:secret@queue:6379/0")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    env = agent_environment({"CLAUDE_CODE_MAX_RETRIES": "2", "ANTHROPIC_API_KEY": "default"})
    assert "SHIM_REDIS_URL" not in env
    assert env["ANTHROPIC_API_KEY"] == "k"  # the worker's environment wins over defaults
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"


def test_a_stale_worktree_never_overwrites_work_another_machine_pushed(tmp_path):
    """URL repository: machine A's attempt dies leaving its worktree; machine B's attempt pushes
    work; A's next attempt starts from B's pushed branch instead of its stale worktree."""
    from shim_core.worktrees import Worktrees

    origin = make_repo(tmp_path / "origin")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin), str(bare)], check=True)
    url = bare.as_uri()
    base = resolve_repo(url).base
    a, b = Worktrees(url, tmp_path / "a"), Worktrees(url, tmp_path / "b")
    dead = a.prepare("r", "t", base, [])
    (dead.path / "a.txt").write_text("never pushed\n")
    a.release(dead)  # machine A's worker died here
    on_b = b.prepare("r", "t", base, [])
    (on_b.path / "b.txt").write_text("pushed by B\n")
    b.commit(on_b, "B's attempt")
    b.publish(on_b)
    b.remove(on_b)
    again = a.prepare("r", "t", base, [])
    assert (again.path / "b.txt").read_text() == "pushed by B\n"
    (again.path / "c.txt").write_text("A again\n")
    a.commit(again, "A's second attempt")
    a.publish(again)
    a.remove(again)
    files = subprocess.run(
        ["git", "ls-tree", "--name-only", "shim/r/t"], cwd=bare, capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    assert files == ["README.md", "b.txt", "c.txt"]
