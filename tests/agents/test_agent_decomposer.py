"""The ``agent`` decomposition strategy with the real ``claude`` CLI, offline: a scripted
Anthropic API answers the plan as JSON (and a bad one, to exercise the repair round)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_shim.models.anthropic import Hang, ScriptedAnthropic, Text, claude_env, unauthorized
from shim_core.plugins import Plugins
from shim_core.supervisor.decomposer import TaskDecomposer
from shim_core.supervisor.plan import PlanError
from shim_plugins.decomposers.agent import AgentDecomposer, extract_json

pytestmark = pytest.mark.skipif(shutil.which("claude") is None, reason="no claude CLI")

REQUEST = "Add user accounts: a users table, then a login endpoint"


def task(task_id: str, *deps: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "title": f"Do {task_id}",
        "deps": list(deps),
        "executor": "agent",
        "params": {"agent": "claude"},
    }


GOOD = {"name": "accounts", "tasks": [task("schema"), task("login", "schema")]}
UNKNOWN_DEP = {"name": "accounts", "tasks": [task("schema"), task("login", "session")]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("print('hi')\n")
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "app.py"], cwd=path, check=True)
    return path


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedAnthropic]:
    """A scripted API the claude CLI of this process talks to (script it with ``add``)."""
    home = tmp_path / "home"
    home.mkdir()
    with ScriptedAnthropic() as fake:
        for key, value in claude_env(fake.url, str(home)).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
        yield fake


def decompose(repo: Path, **context: Any) -> Any:
    return TaskDecomposer(Plugins()).decompose(
        REQUEST, "agent", {"agent": "claude", "repo": str(repo), **context}
    )


def sent(server: ScriptedAnthropic, index: int) -> str:
    return json.dumps(server.requests[index]["messages"])


def test_the_agents_json_answer_becomes_the_plan(repo: Path, server: ScriptedAnthropic) -> None:
    server.add(Text("Here is the plan:\n```json\n" + json.dumps(GOOD) + "\n```"))
    decomposed = decompose(repo)
    plan = decomposed.plan
    assert plan.name == "accounts"
    assert plan.source == "agent:claude"
    assert [t.id for t in plan.tasks] == ["schema", "login"]
    assert plan.task("login").deps == ("schema",)
    assert plan.task("login").params == {"agent": "claude"}
    assert decomposed.waves == (("schema",), ("login",))
    first = sent(server, 0)
    assert REQUEST in first
    assert "app.py" in first
    assert len(server.requests) == 1


def test_an_invalid_plan_is_repaired_in_a_second_round(
    repo: Path, server: ScriptedAnthropic
) -> None:
    server.add(Text(json.dumps(UNKNOWN_DEP)), Text(json.dumps(GOOD)))
    plan = decompose(repo).plan
    assert plan.task("login").deps == ("schema",)
    assert len(server.requests) == 2
    second = sent(server, 1)
    assert "depends on unknown task 'session'" in second
    assert REQUEST in second


def test_a_plan_still_invalid_after_the_repair_round_is_refused(
    repo: Path, server: ScriptedAnthropic
) -> None:
    server.add(Text(json.dumps(UNKNOWN_DEP)), Text(json.dumps(UNKNOWN_DEP)))
    with pytest.raises(PlanError) as caught:
        decompose(repo)
    assert caught.value.problems[0] == "the agent's plan is invalid after one repair round:"
    assert "depends on unknown task 'session'" in str(caught.value)
    assert len(server.requests) == 2


def test_an_answer_without_json_twice_is_refused(repo: Path, server: ScriptedAnthropic) -> None:
    server.add(Text("I would split this in two tasks."), Text("Sorry, no JSON today."))
    with pytest.raises(PlanError, match="repair round") as caught:
        decompose(repo)
    assert "no JSON object" in str(caught.value)
    assert "I would split this in two tasks." in sent(server, 1)


def test_a_failed_agent_run_is_a_plan_error(repo: Path, server: ScriptedAnthropic) -> None:
    server.add(unauthorized())
    with pytest.raises(PlanError, match="the agent 'claude' failed"):
        decompose(repo)


def test_an_agent_that_runs_too_long_is_killed(repo: Path, server: ScriptedAnthropic) -> None:
    server.add(Hang(30))
    with pytest.raises(PlanError, match="the agent 'claude' timed out after 1 s"):
        decompose(repo, timeout=1)


def test_a_missing_cli_is_a_plan_error(repo: Path) -> None:
    with pytest.raises(PlanError, match="agent CLI 'no-such-cli' not found on PATH"):
        decompose(repo, agent_command="no-such-cli")


def test_a_missing_adapter_is_a_plan_error(repo: Path) -> None:
    with pytest.raises(PlanError, match="agent adapter 'nope' is not installed"):
        decompose(repo, agent="nope")


def test_outside_git_the_files_are_listed_by_a_walk(
    tmp_path: Path, server: ScriptedAnthropic
) -> None:
    plain = tmp_path / "plain"
    (plain / "src").mkdir(parents=True)
    (plain / "src" / "main.py").write_text("")
    (plain / ".git").mkdir()
    (plain / ".git" / "HEAD").write_text("junk")  # not a repository: git ls-files fails
    server.add(Text(json.dumps(GOOD)))
    context = {"agent_adapters": Plugins().adapters, "repo": str(plain)}
    plan = AgentDecomposer().decompose(REQUEST, context)
    assert [t.id for t in plan.tasks] == ["schema", "login"]
    first = sent(server, 0)
    assert "src/main.py" in first
    assert ".git/HEAD" not in first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure!\n```json\n{"a": {"b": 2}}\n```\nDone.', {"a": {"b": 2}}),
        ('The plan: {"a": 1} (see {braces})', {"a": 1}),
    ],
)
def test_extract_json_finds_the_object(text: str, expected: Any) -> None:
    assert extract_json(text) == (expected, "")


@pytest.mark.parametrize("text", ["", "no json", '{"a": ', "} backwards {"])
def test_extract_json_reports_what_is_wrong(text: str) -> None:
    data, problem = extract_json(text)
    assert data is None
    assert problem
