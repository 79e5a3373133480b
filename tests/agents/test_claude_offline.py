"""The real ``claude`` CLI, run offline against a scripted Anthropic API (``ScriptedAnthropic``).

These tests pin down what SHIM's Claude Code executor relies on: the stream-json events, the
permission flags that work as root, resume, and what the CLI does on 429 / 401 / a hung API /
``--max-turns``. Set ``SHIM_RECORD_CLAUDE_FIXTURES=1`` to rewrite the recorded streams in
``tests/fixtures/agents/claude/`` (temporary paths are replaced by ``/WORKDIR`` and ``/HOME``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_shim.models.anthropic import (
    Hang,
    Reply,
    ScriptedAnthropic,
    Status,
    Text,
    ToolUse,
    claude_env,
    rate_limited,
    unauthorized,
)
from tests.agents._support import run_jsonl_cli

CLAUDE = shutil.which("claude")
pytestmark = pytest.mark.skipif(CLAUDE is None, reason="the claude CLI is not installed")

FIXTURES = Path(__file__).parent.parent / "fixtures" / "agents" / "claude"
RECORD = os.environ.get("SHIM_RECORD_CLAUDE_FIXTURES") == "1"

#: Lets Claude Code write files and run any Bash command without prompting, as root (where
#: ``--dangerously-skip-permissions`` / ``--permission-mode bypassPermissions`` are refused).
PERMISSIONS = ("--permission-mode", "acceptEdits", "--allowedTools", "Bash,Edit,Write,Read")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]

    def of(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("type") == type_ and (subtype is None or e.get("subtype") == subtype)
        ]

    @property
    def result(self) -> dict[str, Any]:
        results = self.of("result")
        assert len(results) == 1, self.stdout + self.stderr
        return results[0]


@dataclass
class Claude:
    """Runs ``claude -p`` with a private HOME, in ``work``, against ``server``."""

    server: ScriptedAnthropic
    home: Path
    work: Path

    def __call__(
        self,
        prompt: str,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        record: str | None = None,
        timeout: float = 30,
    ) -> Run:
        assert CLAUDE is not None
        full_env = {
            "PATH": os.environ["PATH"],
            **claude_env(self.server.url, str(self.home)),
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        for key, value in (env or {}).items():  # None removes a variable
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        argv = [CLAUDE, "-p", prompt, "--output-format", "stream-json", "--verbose", *args]
        proc, events = run_jsonl_cli(
            argv,
            cwd=cwd or self.work,
            env=full_env,
            timeout=timeout,
            record=FIXTURES / f"{record}.jsonl" if record and RECORD else None,
            scrub=self._scrub,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, events)

    def _scrub(self, text: str) -> str:
        for path, placeholder in ((self.work, "/WORKDIR"), (self.home, "/HOME")):
            for parent in (path.parent / "other", path):
                name = placeholder + ("_OTHER" if parent.name == "other" else "")
                text = text.replace(str(parent), name).replace(encode_cwd(parent), encode_cwd(name))
        return text


def encode_cwd(path: Path | str) -> str:
    """The directory name Claude Code stores a cwd's sessions under, in ``~/.claude/projects``."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


@pytest.fixture
def make_claude(tmp_path: Path) -> Iterator[Any]:
    servers: list[ScriptedAnthropic] = []

    def make(script: Sequence[Reply]) -> Claude:
        server = ScriptedAnthropic(script)
        servers.append(server)
        (tmp_path / "home").mkdir(exist_ok=True)
        (tmp_path / "work").mkdir(exist_ok=True)
        return Claude(server, tmp_path / "home", tmp_path / "work")

    yield make
    for server in servers:
        server.close()


def test_write_and_bash_tool_calls_run_as_root_without_prompting(make_claude: Any) -> None:
    claude = make_claude(
        [
            ToolUse("Write", {"file_path": "hello.txt", "content": "hi\n"}),
            ToolUse("Bash", {"command": "cat hello.txt > copy.txt && echo bash-ran"}),
            Text("Created hello.txt.", input_tokens=1000, output_tokens=50),
        ]
    )
    run = claude("create hello.txt", *PERMISSIONS, record="success_tool_call")

    assert run.returncode == 0, run.stderr
    assert (claude.work / "hello.txt").read_text() == "hi\n"
    assert (claude.work / "copy.txt").read_text() == "hi\n"
    init = run.of("system", "init")[0]
    session_id = init["session_id"]
    assert init["cwd"] == str(claude.work)
    assert init["permissionMode"] == "acceptEdits"
    assert {"Bash", "Write", "Edit", "Read"} <= set(init["tools"])
    assert init["apiKeySource"] == "ANTHROPIC_API_KEY"
    assert [e["type"] for e in run.events] == [
        "system", "assistant", "user", "assistant", "user", "assistant", "result",
    ]  # fmt: skip
    assert all(e["session_id"] == session_id for e in run.events)
    tool_results = [e["message"]["content"][0] for e in run.of("user")]
    assert "bash-ran" in tool_results[1]["content"]
    assert not any(block.get("is_error") for block in tool_results)

    result = run.result
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Created hello.txt."
    assert result["num_turns"] == 3
    assert result["session_id"] == session_id
    assert result["usage"]["input_tokens"] == 1200
    assert result["usage"]["output_tokens"] == 110
    assert result["total_cost_usd"] > 0
    assert result["permission_denials"] == []

    # The CLI sent the tool results back; no background request consumed the script.
    assert len(claude.server.requests) == 3
    assert claude.server.remaining == 0
    last = claude.server.requests[-1]["messages"]
    assert any(
        block.get("type") == "tool_result"
        for message in last
        if isinstance(message["content"], list)
        for block in message["content"]
    )
    # Offline: only /v1/messages was called.
    assert {path for _, path, _ in claude.server.log} == {"/v1/messages?beta=true"}
    # The session is stored under the private HOME, keyed by the encoded cwd.
    session_file = claude.home / ".claude" / "projects" / encode_cwd(claude.work)
    assert (session_file / f"{session_id}.jsonl").is_file()


def test_default_permission_mode_denies_writes(make_claude: Any) -> None:
    claude = make_claude([ToolUse("Write", {"file_path": "x.txt", "content": "x"}), Text("no")])
    run = claude("write x.txt", record="permission_denied")

    assert run.returncode == 0
    assert not (claude.work / "x.txt").exists()
    denied = run.of("system", "permission_denied")
    assert [e["tool_name"] for e in denied] == ["Write"]
    assert run.result["permission_denials"][0]["tool_name"] == "Write"


def test_skip_permissions_is_refused_as_root(make_claude: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root is refused")
    claude = make_claude([])
    run = claude("hi", "--dangerously-skip-permissions")

    assert run.returncode == 1
    assert run.events == []
    assert "cannot be used with root/sudo privileges" in run.stderr
    assert claude.server.log == []


def test_resume_continues_the_conversation(make_claude: Any, tmp_path: Path) -> None:
    claude = make_claude([Text("first answer"), Text("second answer"), Text("third answer")])
    first = claude("first question", *PERMISSIONS)
    session_id = first.result["session_id"]

    second = claude("second question", "--resume", session_id, *PERMISSIONS, record="resume")

    assert second.returncode == 0, second.stderr
    assert second.of("system", "init")[0]["session_id"] == session_id
    assert second.result["session_id"] == session_id
    assert second.result["result"] == "second answer"
    texts = json.dumps(claude.server.requests[1]["messages"])
    assert "first question" in texts
    assert "first answer" in texts
    assert "second question" in texts

    # This version finds the session from another cwd too (and tells the model the cwd moved).
    other = tmp_path / "other"
    other.mkdir()
    third = claude("third question", "--resume", session_id, *PERMISSIONS, cwd=other)
    assert third.returncode == 0, third.stderr
    assert third.result["result"] == "third answer"
    assert "second answer" in json.dumps(claude.server.requests[2]["messages"])


def test_resume_of_unknown_session_fails(make_claude: Any) -> None:
    claude = make_claude([])
    missing = "00000000-0000-4000-8000-000000000000"
    run = claude("again", "--resume", missing, *PERMISSIONS, record="resume_not_found")

    assert run.returncode == 1
    assert f"No conversation found with session ID: {missing}" in run.stderr
    assert [e["type"] for e in run.events] == ["result"]  # no system/init event
    assert run.result["subtype"] == "error_during_execution"
    assert run.result["is_error"] is True
    assert run.result["errors"] == [f"No conversation found with session ID: {missing}"]
    assert claude.server.requests == []


def test_rate_limit_is_retried_up_to_claude_code_max_retries(make_claude: Any) -> None:
    claude = make_claude([rate_limited(retry_after=1)] * 3 + [Text("never")])
    run = claude("hi", *PERMISSIONS, env={"CLAUDE_CODE_MAX_RETRIES": "2"}, record="rate_limited")

    assert run.returncode == 1
    assert len(claude.server.requests) == 3
    retries = run.of("system", "api_retry")
    assert [(e["attempt"], e["max_retries"], e["error_status"]) for e in retries] == [
        (1, 2, 429),
        (2, 2, 429),
    ]
    assert all(e["error"] == "rate_limit" for e in retries)
    result = run.result
    assert result["is_error"] is True
    assert result["subtype"] == "success"  # sic: an API error still reports subtype "success"
    assert result["terminal_reason"] == "api_error"
    assert result["api_error_status"] == 429
    assert result["result"].startswith("API Error: Request rejected (429)")
    assert result["total_cost_usd"] == 0


def test_rate_limit_recovers_honouring_retry_after_with_default_retries(make_claude: Any) -> None:
    claude = make_claude([rate_limited(retry_after=2), Text("recovered")])
    run = claude("hi", *PERMISSIONS, env={"CLAUDE_CODE_MAX_RETRIES": None})

    assert run.returncode == 0, run.stderr
    (retry,) = run.of("system", "api_retry")
    assert retry["max_retries"] == 10  # the default when CLAUDE_CODE_MAX_RETRIES is unset
    assert retry["retry_delay_ms"] >= 2000  # retry-after is honoured
    # Retried after the 2 s asked for, not after a backoff of its own (timed from the
    # requests: the CLI's start-up is not part of it, and takes long on a loaded machine).
    first, second = claude.server.request_times[:2]
    assert 2 <= second - first < 10
    assert run.result["result"] == "recovered"


def test_no_retry_when_max_retries_is_zero(make_claude: Any) -> None:
    claude = make_claude([rate_limited(), Text("never")])
    run = claude("hi", *PERMISSIONS, env={"CLAUDE_CODE_MAX_RETRIES": "0"})

    assert run.returncode == 1
    assert run.of("system", "api_retry") == []
    assert len(claude.server.requests) == 1


def test_auth_failure(make_claude: Any) -> None:
    claude = make_claude([unauthorized()] * 2 + [Text("never")])
    run = claude("hi", *PERMISSIONS, record="auth_failed")

    assert run.returncode == 1
    assert run.stderr == ""
    assert len(claude.server.requests) == 1  # 401s are retried too, unless retries are off
    (assistant,) = run.of("assistant")
    assert assistant["message"]["model"] == "<synthetic>"
    result = run.result
    assert result["is_error"] is True
    assert result["api_error_status"] == 401
    assert result["api_error_type"] == "authentication_error"
    assert result["result"] == "Invalid API key · Fix external API key"


def test_max_turns(make_claude: Any) -> None:
    claude = make_claude([ToolUse("Write", {"file_path": "a.txt", "content": "a"}), Text("never")])
    run = claude("write a.txt", "--max-turns", "1", *PERMISSIONS, record="max_turns")

    assert run.returncode == 1
    assert (claude.work / "a.txt").read_text() == "a"  # the one tool call still ran
    result = run.result
    assert result["subtype"] == "error_max_turns"
    assert result["is_error"] is True
    assert result["terminal_reason"] == "max_turns"
    assert result["errors"] == ["Reached maximum number of turns (1)"]
    assert "result" not in result
    assert result["num_turns"] == 2
    assert len(claude.server.requests) == 1


def test_hung_api_times_out_with_api_timeout_ms(make_claude: Any) -> None:
    claude = make_claude([Hang(30), Text("never")])
    run = claude("hi", *PERMISSIONS, env={"API_TIMEOUT_MS": "2000"}, record="api_timeout")

    # Given up long before the 30 s hang ends (timed from the first request: the CLI's
    # start-up is not part of it).
    assert time.monotonic() - claude.server.request_times[0] < 15
    assert run.returncode == 1
    result = run.result
    assert result["is_error"] is True
    assert result["terminal_reason"] == "api_error"
    assert result["result"].startswith("Request timed out.")


# -- the fake server on its own (paths the CLI does not exercise) ---------------------------------


def _post(url: str, body: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def test_server_plain_json_background_and_other_endpoints() -> None:
    with ScriptedAnthropic([ToolUse("Bash", {"command": "ls"}, text="Listing.")]) as server:
        messages = f"{server.url}/v1/messages"
        body = {"model": "m", "max_tokens": 10, "tools": TOOLS, "messages": []}
        status, _, raw = _post(messages, body)
        reply = json.loads(raw)
        assert status == 200
        assert reply["stop_reason"] == "tool_use"
        assert [b["type"] for b in reply["content"]] == ["text", "tool_use"]
        assert reply["content"][1]["input"] == {"command": "ls"}
        assert reply["model"] == "m"

        # Background requests (no tools, or max_tokens 1) do not consume the script.
        server.add(Text("scripted"))
        _, _, raw = _post(messages, {"max_tokens": 1, "tools": TOOLS, "messages": []})
        assert json.loads(raw)["content"][0]["text"] == "ok"
        _, _, raw = _post(messages, {"system": "Reply in JSON", "messages": []})
        assert json.loads(json.loads(raw)["content"][0]["text"])["isNewTopic"] is False
        assert len(server.background) == 2
        assert server.remaining == 1
        _, _, raw = _post(messages, body)
        assert json.loads(raw)["content"][0]["text"] == "scripted"
        _, _, raw = _post(messages, body)
        assert json.loads(raw)["content"][0]["text"] == "done"  # script exhausted
        assert len(server.requests) == 3

        _, _, raw = _post(f"{server.url}/v1/messages/count_tokens", body)
        assert json.loads(raw)["input_tokens"] > 0
        assert _post(f"{server.url}/v1/other", {})[0] == 200
        bad = urllib.request.Request(f"{server.url}/v1/messages", b"not json", method="POST")
        with urllib.request.urlopen(bad, timeout=5) as response:
            assert json.loads(response.read()) == {}
        with urllib.request.urlopen(f"{server.url}/v1/models?limit=5", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["type"] == "model"
        with urllib.request.urlopen(f"{server.url}/api/hello", timeout=5) as response:
            assert json.loads(response.read()) == {}
        head = urllib.request.Request(f"{server.url}/api/hello", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.status == 200
        delete = urllib.request.Request(f"{server.url}/v1/x", method="DELETE")
        with urllib.request.urlopen(delete, timeout=5) as response:
            assert response.status == 200
        assert [method for method, _, _ in server.log][-4:] == ["GET", "GET", "HEAD", "DELETE"]
        assert ("POST", "/v1/messages", None) in server.log


def test_server_errors_and_hang() -> None:
    script: list[Reply] = [rate_limited(retry_after=7), unauthorized(), Status(529), Hang(0.2)]
    with ScriptedAnthropic(script) as server:
        body = {"tools": TOOLS, "messages": [], "stream": True}
        status, headers, raw = _post(f"{server.url}/v1/messages", body)
        assert status == 429
        assert headers["retry-after"] == "7"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert json.loads(raw)["error"]["type"] == "rate_limit_error"
        status, _, raw = _post(f"{server.url}/v1/messages", body)
        assert (status, json.loads(raw)["error"]["type"]) == (401, "authentication_error")
        status, _, raw = _post(f"{server.url}/v1/messages", body)
        assert (status, json.loads(raw)["error"]["type"]) == (529, "overloaded_error")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _post(f"{server.url}/v1/messages", body)
        assert server.first_request_at == server.request_times[0]
    server.close()  # idempotent
