"""The adapters read the real output of each CLI (recorded in tests/fixtures/agents/) into the
right outcome, session, summary, cost and tokens, and survive anything else."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim_core.contracts import AgentInvocation, AgentState
from shim_core.models import TaskOutcome
from shim_plugins.agents import (
    AiderAdapter,
    ClaudeAdapter,
    CodexAdapter,
    GeminiAdapter,
    GenericAdapter,
    OpenCodeAdapter,
)
from shim_plugins.agents.claude import permission_args
from shim_plugins.executors._agent_process import Ended
from shim_plugins.executors.agent import classify

FIXTURES = Path(__file__).parent.parent / "fixtures" / "agents"
ADAPTERS = {
    "claude": ClaudeAdapter(),
    "codex": CodexAdapter(),
    "gemini": GeminiAdapter(),
    "opencode": OpenCodeAdapter(),
    "aider": AiderAdapter(),
}


def read(agent, name, exit_code=0):
    adapter = ADAPTERS[agent]
    state = AgentState()
    for line in (FIXTURES / agent / name).read_text(encoding="utf-8").splitlines():
        adapter.feed(line, state)
    adapter.finish(exit_code, state)
    return state, classify(state, Ended(exit_code))


@pytest.mark.parametrize(
    ("agent", "name", "outcome", "summary"),
    [
        ("claude", "success_tool_call.jsonl", TaskOutcome.SUCCESS, "Created hello.txt."),
        ("claude", "resume.jsonl", TaskOutcome.SUCCESS, "second answer"),
        ("claude", "max_turns.jsonl", TaskOutcome.MAX_TURNS, ""),
        ("claude", "rate_limited.jsonl", TaskOutcome.RATE_LIMITED, "API Error"),
        ("claude", "auth_failed.jsonl", TaskOutcome.AUTH_FAILED, "Invalid API key"),
        ("claude", "api_timeout.jsonl", TaskOutcome.FAILED, "Request timed out"),
        ("claude", "resume_not_found.jsonl", TaskOutcome.FAILED, ""),
        ("codex", "success_tool_call.jsonl", TaskOutcome.SUCCESS, "Created hello.txt."),
        ("codex", "success_apply_patch.jsonl", TaskOutcome.SUCCESS, "Patched."),
        ("codex", "resume.jsonl", TaskOutcome.SUCCESS, "Continued."),
        ("codex", "rate_limited_then_recovered.jsonl", TaskOutcome.SUCCESS, "Recovered."),
        ("codex", "rate_limited.jsonl", TaskOutcome.RATE_LIMITED, ""),
        ("codex", "auth_failure.jsonl", TaskOutcome.AUTH_FAILED, ""),
        ("codex", "dropped_connection.jsonl", TaskOutcome.FAILED, ""),
        ("gemini", "success-write-file.jsonl", TaskOutcome.SUCCESS, "I created hello.txt"),
        ("gemini", "success-write-file-fake-responses.jsonl", TaskOutcome.SUCCESS, "I created"),
        ("gemini", "resume-by-session-id.jsonl", TaskOutcome.SUCCESS, "done, history"),
        ("gemini", "error-auth-401.jsonl", TaskOutcome.AUTH_FAILED, ""),
        ("gemini", "error-auth-400-api-key-invalid.jsonl", TaskOutcome.AUTH_FAILED, ""),
        ("gemini", "error-rate-limit-429.jsonl", TaskOutcome.RATE_LIMITED, ""),
        ("gemini", "error-server-500.jsonl", TaskOutcome.FAILED, ""),
        ("opencode", "success-write-file-with-cost.jsonl", TaskOutcome.SUCCESS, "I created"),
        ("opencode", "resume-by-session-id.jsonl", TaskOutcome.SUCCESS, "done, history"),
        ("opencode", "error-auth-401.jsonl", TaskOutcome.AUTH_FAILED, ""),
        ("opencode", "error-rate-limit-429.jsonl", TaskOutcome.RATE_LIMITED, ""),
        ("opencode", "permission-auto-rejected.jsonl", TaskOutcome.FAILED, "Writing the file"),
    ],
)
def test_recorded_streams_give_the_right_outcome(agent, name, outcome, summary):
    """Each recorded run is classified as what it was, never from the exit code alone."""
    state, found = read(agent, name)
    assert found is outcome, state.error
    assert state.summary.startswith(summary)
    assert state.session_id
    assert state.unknown_lines == 0


@pytest.mark.parametrize(
    ("name", "outcome", "cost"),
    [
        ("success-write-file.txt", TaskOutcome.SUCCESS, 0.0021),
        ("success-write-file-no-stream.txt", TaskOutcome.SUCCESS, 0.00081),
        ("success-write-file-git-autocommit.txt", TaskOutcome.SUCCESS, 0.0021),
        ("error-auth-401.txt", TaskOutcome.AUTH_FAILED, None),
        ("error-rate-limit-429.txt", TaskOutcome.RATE_LIMITED, None),
    ],
)
def test_aider_recorded_output(name, outcome, cost):
    """Aider exits 0 even on a 401 or a 429: its words decide."""
    state, found = read("aider", name)
    assert found is outcome, state.error
    assert state.cost_usd == cost
    assert not state.summary.startswith("Aider v")


def test_claude_success_carries_cost_tokens_and_turns():
    state, _ = read("claude", "success_tool_call.jsonl")
    assert state.cost_usd == pytest.approx(0.007)
    assert (state.input_tokens, state.output_tokens) == (1200, 110)
    assert state.turns == 3
    assert state.tool_calls >= 1


def test_codex_reports_tokens_but_no_cost():
    state, _ = read("codex", "success_tool_call.jsonl")
    assert state.cost_usd is None
    assert state.input_tokens == 19918


def test_a_success_result_after_exit_1_is_not_a_success():
    """A final result with a failing exit status is a failure."""
    state, _ = read("claude", "success_tool_call.jsonl")
    assert classify(state, Ended(1)) is TaskOutcome.FAILED
    assert classify(state, Ended(-9)) is TaskOutcome.CRASHED


def test_a_rate_limit_event_carries_the_reset_time():
    state = AgentState()
    event = {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 2e9}}
    ClaudeAdapter().feed(json.dumps(event), state)
    assert state.outcome is TaskOutcome.RATE_LIMITED
    assert state.rate_limit_reset_ms == 2_000_000_000_000


def test_opencode_events():
    lines = [
        {"type": "step_start", "sessionID": "ses_1", "part": {}},
        {"type": "tool_use", "sessionID": "ses_1", "part": {"tool": "write"}},
        {"type": "text", "sessionID": "ses_1", "part": {"text": "Done."}},
        {"type": "step_finish", "sessionID": "ses_1",
         "part": {"reason": "stop", "cost": 0.01, "tokens": {"input": 10, "output": 5}}},
    ]  # fmt: skip
    state = AgentState()
    for line in lines:
        OpenCodeAdapter().feed(json.dumps(line), state)
    assert classify(state, Ended(0)) is TaskOutcome.SUCCESS
    assert (state.session_id, state.summary, state.cost_usd) == ("ses_1", "Done.", 0.01)
    error = {"type": "error", "error": {"name": "APIError", "data": {"message": "429 Too Many"}}}
    OpenCodeAdapter().feed(json.dumps(error), state)
    assert state.outcome is TaskOutcome.RATE_LIMITED


def test_aider_text_output():
    adapter, state = AiderAdapter(), AgentState()
    for line in [
        "I will add the function.",
        "Applied edit to hello.py",
        "Tokens: 2.1k sent, 150 received. Cost: $0.0012 message, $0.0034 session.",
    ]:
        adapter.feed(line, state)
    adapter.finish(0, state)
    assert classify(state, Ended(0)) is TaskOutcome.SUCCESS
    assert (state.input_tokens, state.output_tokens, state.cost_usd) == (2100, 150, 0.0034)
    assert state.tool_calls == 1
    failed = AgentState()
    adapter.feed("litellm.AuthenticationError: OpenAIException - Incorrect API key", failed)
    adapter.finish(1, failed)
    assert classify(failed, Ended(1)) is TaskOutcome.AUTH_FAILED


def test_generic_template_and_formats(tmp_path):
    invocation = AgentInvocation(
        prompt="do it",
        prompt_file=tmp_path / "p.md",
        workdir=tmp_path,
        model="m1",
        options={"argv": ["amp", "-x", "{prompt}", "--model={model}", "{prompt_file}"]},
    )
    argv = GenericAdapter().argv("", invocation)
    assert argv == ["amp", "-x", "do it", "--model=m1", str(tmp_path / "p.md")]
    text = AgentState(options={})
    GenericAdapter().feed("all done", text)
    GenericAdapter().finish(0, text)
    assert (text.final, text.summary) == (True, "all done")


def test_claude_permission_mode_depends_on_root_and_is_sandbox():
    """As root without IS_SANDBOX=1 the bypass is refused by Claude Code: accept edits and
    allow the tools instead."""
    args = permission_args({"IS_SANDBOX": "1"})
    assert args == ["--permission-mode", "bypassPermissions"]
    import os

    if os.geteuid() == 0:
        assert permission_args({})[:2] == ["--permission-mode", "acceptEdits"]


@settings(deadline=None)  # a pause of the shared machine is no failure
@given(st.text(max_size=300))
def test_no_line_crashes_any_adapter(line):
    """Garbage, half JSON, or JSON of the wrong shape: counted or ignored, never raised."""
    for adapter in [*ADAPTERS.values(), GenericAdapter()]:
        adapter.feed(line, AgentState())
        adapter.feed(json.dumps({"type": "result", "usage": line, "result": [line]}), AgentState())
        adapter.feed(
            json.dumps({"type": "assistant", "message": {"content": [line]}}), AgentState()
        )


def invocation(tmp_path, **changes):
    values = {
        "prompt": "do it",
        "prompt_file": tmp_path / "p.md",
        "workdir": tmp_path,
        "model": "m1",
        "max_turns": 7,
        "max_budget_usd": 1.5,
        "resume_session": "s-1",
        "extra_args": ("--extra",),
    }
    return AgentInvocation(**{**values, **changes})


def test_each_adapter_passes_model_limits_resume_and_extra_args(tmp_path):
    """The params a task sets reach each CLI in that CLI's own flags."""
    inv = invocation(tmp_path)
    claude = ClaudeAdapter().argv("claude", inv)
    assert claude[:4] == ["claude", "-p", "--output-format", "stream-json"]
    assert claude[-2:] == ["--", "do it"]
    for flag, value in [("--model", "m1"), ("--max-turns", "7"), ("--max-budget-usd", "1.5"),
                        ("--resume", "s-1")]:  # fmt: skip
        assert claude[claude.index(flag) + 1] == value
    assert claude[-3] == "--extra"
    codex = CodexAdapter().argv("codex", inv)
    assert codex[:6] == ["codex", "exec", "--sandbox", "workspace-write", "resume", "s-1"]
    assert codex[-3:] == ["--extra", "--", "do it"]
    bypass = CodexAdapter().argv("codex", invocation(tmp_path, options={"sandbox": "bypass"}))
    assert "--dangerously-bypass-approvals-and-sandbox" in bypass
    with pytest.raises(ValueError, match="sandbox"):
        CodexAdapter().argv("codex", invocation(tmp_path, options={"sandbox": "none"}))
    gemini = GeminiAdapter().argv("gemini", inv)
    assert gemini[gemini.index("-m") + 1] == "m1"
    assert gemini[gemini.index("--resume") + 1] == "s-1"
    assert GeminiAdapter().env(inv) == {"GEMINI_CLI_NO_RELAUNCH": "true"}
    opencode = OpenCodeAdapter().argv("opencode", inv)
    assert opencode[opencode.index("--session") + 1] == "s-1"
    assert opencode[-1] == "do it"
    aider = AiderAdapter().argv("aider", inv)
    assert aider[aider.index("--message-file") + 1] == str(tmp_path / "p.md")
    assert aider[aider.index("--model") + 1] == "m1"
    assert ClaudeAdapter().env(inv)["CLAUDE_CODE_MAX_RETRIES"] == "2"


def test_the_generic_adapter_resumes_with_its_resume_template(tmp_path):
    options = {
        "argv": ["amp", "{prompt}"],
        "resume_argv": ["amp", "continue", "{session}", "{prompt}"],
        "format": "stream-json",
    }
    argv = GenericAdapter().argv("/bin/amp", invocation(tmp_path, options=options, extra_args=()))
    assert argv == ["/bin/amp", "continue", "s-1", "do it"]
    with pytest.raises(ValueError, match="placeholder"):
        GenericAdapter().argv("", invocation(tmp_path, options={"argv": ["x", "{nope}"]}))
    with pytest.raises(ValueError, match="format"):
        GenericAdapter().argv("", invocation(tmp_path, options={"argv": ["x"], "format": "xml"}))


def test_a_final_success_is_not_undone_by_earlier_error_words():
    """Error words before a successful final result (a stray stderr line, a retried rate
    limit, or the model's own code in Aider's output) leave the run a success."""
    claude, state = ClaudeAdapter(), AgentState()
    claude.feed("Error: failed to start MCP server 'x'", state)
    rejected = {"status": "rejected", "resetsAt": 2e9}
    claude.feed(json.dumps({"type": "rate_limit_event", "rate_limit_info": rejected}), state)
    claude.feed(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                            "result": "done", "session_id": "s"}), state)  # fmt: skip
    assert classify(state, Ended(0)) is TaskOutcome.SUCCESS
    aider, text = AiderAdapter(), AgentState()
    for line in ["hello.py", "```", "    raise ValueError('x')", "except openai.RateLimitError:",
                 "if resp.status == 401: raise AuthError()", "```",
                 "Applied edit to hello.py"]:  # fmt: skip
        aider.feed(line, text)
    aider.finish(0, text)
    assert classify(text, Ended(0)) is TaskOutcome.SUCCESS


def test_a_read_only_invocation_gives_no_agent_the_right_to_write(tmp_path):
    """What `shim plan --strategy agent` runs must not change the user's checkout."""
    inv = invocation(tmp_path, read_only=True, resume_session=None)
    claude = ClaudeAdapter().argv("claude", inv)
    assert claude[claude.index("--permission-mode") + 1] == "plan"
    assert "--allowedTools" not in claude
    codex = CodexAdapter().argv(
        "codex", invocation(tmp_path, read_only=True, options={"sandbox": "bypass"})
    )
    assert codex[codex.index("--sandbox") + 1] == "read-only"
    assert "--yolo" not in GeminiAdapter().argv("gemini", inv)
    assert "--auto" not in OpenCodeAdapter().argv("opencode", inv)
    assert "--dry-run" in AiderAdapter().argv("aider", inv)
