"""The real ``gemini`` (Gemini CLI 0.61) and ``opencode`` (1.18) CLIs run through SHIM's agent
executor and adapters, fully offline.

* Gemini CLI needs no server: its hidden ``--fake-responses FILE`` option (passed through
  ``params.extra_args``) answers every model call from a JSONL file, one line per call, in
  order: ``{"method": "generateContent" | "generateContentStream", "response": ...}`` (for a
  stream, an array of chunks). With the default model ``auto`` a turn starts with a
  ``generateContent`` router call whose text is JSON with ``complexity_reasoning`` and
  ``complexity_score``; then one ``generateContentStream`` per model step.
  ``tests/fixtures/agents/gemini/fake-responses-write-file.jsonl`` was written by
  ``--record-responses`` from a run against a stub of the Gemini API. ``HOME`` (a fresh one,
  with a settings file selecting API-key auth and switching off updates and statistics) and
  ``GEMINI_API_KEY`` come from ``params.env``.
* OpenCode talks to pytest_shim's :class:`ScriptedOpenAI` through an ``@ai-sdk/openai-compatible``
  provider defined in ``$HOME/.config/opencode/opencode.json``; its session-title request (no
  tools) is answered without consuming the script (``background_if=without_tools``). It takes
  7-10 s to start, so one server, home and first run serve both of its tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_shim.models.openai import ScriptedOpenAI, Text, ToolCall, without_tools
from shim_core.models import Task, TaskContext, TaskOutcome, TaskResult
from shim_core.testing import RecordingContext
from shim_core.worktrees import task_branch
from shim_plugins.agents import GeminiAdapter, OpenCodeAdapter
from shim_plugins.executors._agent_prompt import RESUME
from shim_plugins.executors.agent import AgentExecutor

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agents" / "gemini"
WRITE_FILE = FIXTURES / "fake-responses-write-file.jsonl"  # writes hello.txt, then answers
WRITE_FILE_ANSWER = "I created hello.txt with the requested content."
ADAPTERS = {"gemini": GeminiAdapter(), "opencode": OpenCodeAdapter()}
#: Seconds before the executor kills a CLI (a hang fails the test instead of blocking it).
TIMEOUT = 60

needs_gemini = pytest.mark.skipif(shutil.which("gemini") is None, reason="gemini not installed")
needs_opencode = pytest.mark.skipif(
    shutil.which("opencode") is None, reason="opencode not installed"
)


def execute(
    task: Task, workdir: Path, trees: Path, **ctx_args: Any
) -> tuple[TaskResult, RecordingContext]:
    ctx = RecordingContext(task=task, workdir=workdir, agent_adapters=ADAPTERS, **ctx_args)
    with ctx:
        return AgentExecutor(worktree_root=trees).execute(task, ctx), ctx


def command_line(ctx: RecordingContext) -> str:
    return next(line for line in ctx.logs if line.startswith("running "))


# -- Gemini CLI ----------------------------------------------------------------------------

GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
}


def gemini_env(home: Path) -> dict[str, str | None]:
    """``params.env`` for an offline run: a fresh HOME with settings, a dummy key, and no
    Google variables of the machine's own (None removes a variable)."""
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(GEMINI_SETTINGS))
    return {
        "HOME": str(home),
        "GEMINI_API_KEY": "x",
        "GOOGLE_API_KEY": None,
        "GOOGLE_GEMINI_BASE_URL": None,
        "GOOGLE_GENAI_USE_VERTEXAI": None,
        "GOOGLE_CLOUD_PROJECT": None,
        "NO_COLOR": "1",
    }


def gemini_task(home: Path, responses: Path, **fields: Any) -> Task:
    params = {
        "agent": "gemini",
        "extra_args": ["--fake-responses", str(responses)],
        "env": gemini_env(home),
        "timeout": TIMEOUT,
    }
    fields.setdefault("id", "g")
    return Task(
        executor="agent",
        title="Create hello.txt",
        description="Create hello.txt containing 'hello from stub'.",
        params=params,
        **fields,
    )


def gemini_answer(path: Path, answer: str) -> Path:
    """A fake-responses file for one turn that only answers ``answer``."""
    router = {"complexity_reasoning": "simple", "complexity_score": 10}
    lines = [
        {
            "method": "generateContent",
            "response": {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": json.dumps(router)}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5},
            },
        },
        {
            "method": "generateContentStream",
            "response": [
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": answer}]},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 7},
                }
            ],
        },
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@needs_gemini
def test_gemini_writes_a_file_reports_its_result_and_resumes_its_session(tmp_path: Path) -> None:
    """A turn that calls write_file then answers: a success with the answer as summary, the
    session id (checkpointed), tokens, no cost (Gemini CLI reports none). A second attempt
    with that checkpoint runs ``--resume <id>`` and stays in the same session."""
    home, ws = tmp_path / "home", tmp_path / "ws"
    ws.mkdir()
    result, ctx = execute(gemini_task(home, WRITE_FILE), ws, tmp_path / "trees")
    assert result.success, (result.error, ctx.logs)
    assert result.outcome is TaskOutcome.SUCCESS
    assert (ws / "hello.txt").read_text() == "hello from stub\n"
    out = result.output
    assert out["agent"] == "gemini"
    assert out["summary"] == WRITE_FILE_ANSWER
    session = out["session_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", session)
    assert ctx.checkpoint_states[0] == {"agent": "gemini", "session_id": session,
                                        "workdir": str(ws)}  # fmt: skip
    assert out["tokens"] == {"input": 230, "output": 36}  # router call + two steps
    assert out["cost_usd"] is None
    assert out["turns"] == 2
    assert "-o stream-json --skip-trust --yolo --fake-responses" in command_line(ctx)
    assert "--resume" not in command_line(ctx)
    assert any('"tool_name":"write_file"' in line for line in ctx.logs)  # the output is logged
    assert ctx.progress_calls

    answer = "Nothing left to do: hello.txt is there."
    responses = gemini_answer(tmp_path / "resume.jsonl", answer)
    resume = {"agent": "gemini", "session_id": session}
    again, ctx = execute(gemini_task(home, responses), ws, tmp_path / "trees", resume_state=resume)
    assert again.success, (again.error, ctx.logs)
    assert f"--resume {session}" in command_line(ctx)
    assert not any("could not be resumed" in line for line in ctx.logs)
    assert again.output["session_id"] == session
    assert again.output["summary"] == answer
    assert again.output["tokens"] == {"input": 310, "output": 12}
    # The resumed turn went into the first session: Gemini CLI names its chat files
    # session-<minute>-<first 8 of the session id>, so a turn in a later minute adds a file of
    # the same session, never one of another.
    chats = list(home.glob(".gemini/tmp/*/chats/*.jsonl"))
    assert {c.stem.rsplit("-", 1)[-1] for c in chats} == {session[:8]}
    assert any(RESUME in c.read_text() for c in chats)


@needs_gemini
def test_gemini_in_a_worktree_commits_the_file_it_wrote(tmp_path: Path) -> None:
    """In a task worktree the file gemini wrote is committed on the task branch and reported
    in files_modified; the user's checkout is untouched."""
    repo = tmp_path / "repo"
    base = make_repo(repo)
    context = TaskContext(repo=str(repo), base=base, workspace="worktree")
    task = gemini_task(tmp_path / "home", WRITE_FILE, id="run1:g", run_id="run1", context=context)
    result, ctx = execute(task, tmp_path, tmp_path / "trees")
    assert result.success, (result.error, ctx.logs)
    assert result.files_modified == ("hello.txt",)
    assert result.output["branch"] == task_branch("run1", "g")
    assert git(repo, "show", f"{result.output['commit']}:hello.txt") == "hello from stub\n"
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "hello.txt").exists()
    assert not [p for p in (tmp_path / "trees").glob("*/run1/*") if p.is_dir()]  # worktree removed


def make_repo(path: Path) -> str:
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@t"],
                 ["config", "user.name", "t"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True)
    return git(path, "rev-parse", "HEAD").strip()


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=False)
    return done.stdout


# -- OpenCode ------------------------------------------------------------------------------


class OpenCode:
    """One scripted server, HOME (with the provider config) and workspace for opencode runs."""

    def __init__(self, root: Path, server: ScriptedOpenAI) -> None:
        self.server = server
        self.home = root / "home"
        self.ws = root / "ws"
        self.trees = root / "trees"
        self.ws.mkdir(parents=True)
        config = {
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": False,
            "share": "disabled",
            "provider": {
                "stub": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Stub",
                    "options": {"baseURL": server.url, "apiKey": "x"},
                    # dollars per million tokens
                    "models": {"x": {"name": "x", "cost": {"input": 3, "output": 15}}},
                }
            },
            "model": "stub/x",
            # "ask" is auto-rejected by `opencode run` unless the adapter's --auto approves it
            "permission": {"edit": "ask", "bash": "ask"},
        }
        path = self.home / ".config" / "opencode" / "opencode.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(config))

    def task(self, **fields: Any) -> Task:
        home = self.home
        env = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "OPENCODE_DISABLE_MODELS_FETCH": "1",  # no models.dev catalogue download
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_CONFIG": None,
            "OPENCODE_CONFIG_CONTENT": None,
        }
        params = {"agent": "opencode", "model": "stub/x", "env": env, "timeout": TIMEOUT}
        return Task(
            id="o",
            executor="agent",
            title="Create hello.txt",
            description="Create hello.txt containing 'hi'.",
            params=params,
            **fields,
        )

    def execute(self, **ctx_args: Any) -> tuple[TaskResult, RecordingContext]:
        return execute(self.task(), self.ws, self.trees, **ctx_args)


@pytest.fixture(scope="module")
def opencode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenCode]:
    script = [
        ToolCall("write", {"filePath": "hello.txt", "content": "hi\n"}, call_id="call_write_1",
                 input_tokens=1000, output_tokens=20),
        Text("Created hello.txt.", input_tokens=1100, output_tokens=10),
    ]  # fmt: skip
    with ScriptedOpenAI(script, background_if=without_tools) as server:
        yield OpenCode(tmp_path_factory.mktemp("opencode"), server)


@pytest.fixture(scope="module")
def opencode_first(opencode: OpenCode) -> tuple[TaskResult, RecordingContext]:
    """The first opencode run (shared: each run costs 7-10 s of start-up)."""
    return opencode.execute()


@needs_opencode
def test_opencode_writes_a_file_and_reports_cost_tokens_and_session(
    opencode: OpenCode, opencode_first: tuple[TaskResult, RecordingContext]
) -> None:
    """A step that calls ``write``, then a step that answers: success, the file written in the
    task's directory (not the worker's $PWD) though the config says ``"edit": "ask"``, the
    answer as summary, tokens and cost summed over both ``step_finish`` events (cost from the
    model's configured prices), the session id checkpointed."""
    result, ctx = opencode_first
    assert result.success, (result.error, ctx.logs)
    assert result.outcome is TaskOutcome.SUCCESS
    assert (opencode.ws / "hello.txt").read_text() == "hi\n"
    out = result.output
    assert out["summary"] == "Created hello.txt."
    assert out["tokens"] == {"input": 2100, "output": 30}
    assert out["cost_usd"] == pytest.approx((2100 * 3 + 30 * 15) / 1e6)
    assert result.cost_usd == out["cost_usd"]
    assert out["turns"] == 2
    session = out["session_id"]
    assert session.startswith("ses_")
    assert ctx.checkpoint_states[0]["session_id"] == session
    assert f"run --format json --dir {opencode.ws} --auto --model stub/x" in command_line(ctx)
    assert ctx.progress_calls
    first, second = opencode.server.requests
    assert "write" in [tool["function"]["name"] for tool in first["tools"]]
    assert first["messages"][-1]["role"] == "user"
    result_message = second["messages"][-1]
    assert result_message["role"] == "tool"
    assert result_message["tool_call_id"] == "call_write_1"
    assert len(opencode.server.background) == 1  # the session title, answered off-script


@needs_opencode
def test_opencode_resumes_the_checkpointed_session(
    opencode: OpenCode, opencode_first: tuple[TaskResult, RecordingContext]
) -> None:
    """A second attempt with the first one's checkpoint runs ``--session <id>``: the server
    sees the earlier conversation (the write call and its result) before the resume prompt,
    and the session id stays the same."""
    first, _ = opencode_first
    session = first.output["session_id"]
    assert session
    seen = len(opencode.server.requests)
    opencode.server.add(Text("All done already.", input_tokens=1500, output_tokens=5))
    result, ctx = opencode.execute(resume_state={"agent": "opencode", "session_id": session})
    assert result.success, (result.error, ctx.logs)
    assert f"--session {session}" in command_line(ctx)
    assert not any("could not be resumed" in line for line in ctx.logs)
    assert result.output["session_id"] == session
    assert result.output["summary"] == "All done already."
    assert result.output["tokens"] == {"input": 1500, "output": 5}
    (request,) = opencode.server.requests[seen:]
    messages = request["messages"]
    calls = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert [c["tool_calls"][0]["function"]["name"] for c in calls] == ["write"]
    assert any(m["role"] == "tool" and m["tool_call_id"] == "call_write_1" for m in messages)
    assert any(m["role"] == "assistant" and "Created hello.txt." in str(m["content"])
               for m in messages)  # fmt: skip
    assert RESUME in str(messages[-1]["content"])
