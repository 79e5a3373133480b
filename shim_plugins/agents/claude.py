"""Claude Code: ``claude -p PROMPT --output-format stream-json --verbose``.

Permissions: Claude Code refuses ``--dangerously-skip-permissions`` as root unless ``IS_SANDBOX=1``
is set. Where that is allowed (not root, or ``IS_SANDBOX=1``) the adapter bypasses permission
prompts; as root without it, it runs with ``--permission-mode acceptEdits`` and an allowed-tools
list that lets the agent edit files and run commands in its workspace. The executor logs the
command line, so the task log shows which mode was used.

Output events read: ``system``/``init`` (session id), ``assistant`` (text, tool calls, a turn
each), ``rate_limit_event`` (a rejected limit with its reset time), ``result`` (final text,
cost, tokens, turns, and its ``subtype`` / ``is_error``). Any other event is counted unknown.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from shim_core.contracts import AgentInvocation, AgentState
from shim_core.models import TaskOutcome
from shim_plugins.agents._common import (
    Adapter,
    add_tokens,
    clip,
    count,
    json_object,
    note_error,
    number,
    plain_line,
    reset_ms,
    text,
)

#: Tools allowed when permission prompts cannot be bypassed (running as root).
ALLOWED_TOOLS = "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit"
_SUBTYPES = {
    "error_max_turns": TaskOutcome.MAX_TURNS,
    "error_max_budget_usd": TaskOutcome.BUDGET_EXCEEDED,
    "error_max_budget": TaskOutcome.BUDGET_EXCEEDED,
}


def permission_args(env: dict[str, str] | None = None) -> list[str]:
    """The permission flags for this process: bypass where Claude Code allows it, else accept
    edits with an allowed-tools list."""
    env = dict(os.environ) if env is None else env
    if os.geteuid() != 0 or env.get("IS_SANDBOX") == "1":
        return ["--permission-mode", "bypassPermissions"]
    return ["--permission-mode", "acceptEdits", "--allowedTools", ALLOWED_TOOLS]


def read_stream_json(line: str, state: AgentState) -> str | None:
    """Claude Code's stream-json (also spoken by Amp, Qwen Code and Cursor's CLI)."""
    event = json_object(line)
    if event is None:
        plain_line(line, state)
        return None
    kind = event.get("type")
    session = text(event.get("session_id"))
    if session and not state.session_id:
        state.session_id = session
    if kind == "system":
        return None
    if kind == "assistant":
        return _assistant(event, state)
    if kind == "user":
        return None
    if kind == "rate_limit_event":
        return _rate_limit(event, state)
    if kind == "result":
        return _result(event, state)
    state.unknown_lines += 1
    return None


def _assistant(event: dict[str, Any], state: AgentState) -> str | None:
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        state.unknown_lines += 1
        return None
    state.turns += 1
    shown = None
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and text(block.get("text")).strip():
            state.summary = clip(text(block.get("text")).strip())
            shown = state.summary.splitlines()[0][:120]
        elif block.get("type") == "tool_use":
            state.tool_calls += 1
            shown = f"tool {text(block.get('name')) or '?'}{_target(block.get('input'))}"
    return shown


def _target(tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    for key in ("file_path", "path", "command", "pattern"):
        value = text(tool_input.get(key))
        if value:
            return f": {value[:80]}"
    return ""


def _rate_limit(event: dict[str, Any], state: AgentState) -> str | None:
    info = event.get("rate_limit_info")
    info = info if isinstance(info, dict) else event
    reset = reset_ms(info.get("resetsAt") or info.get("resets_at"))
    if reset is not None:
        state.rate_limit_reset_ms = reset
    if text(info.get("status")) == "rejected":
        state.outcome = TaskOutcome.RATE_LIMITED
        state.error = "rate limited" + (f" until {reset} ms" if reset else "")
        return "rate limited"
    return None


def _result(event: dict[str, Any], state: AgentState) -> str | None:
    state.final = True
    final = text(event.get("result")).strip()
    if final:
        state.summary = clip(final)
    cost = number(event.get("total_cost_usd"))
    if cost is None:
        cost = number(event.get("cost_usd"))
    if cost is not None:
        state.cost_usd = cost
    usage = event.get("usage")
    if isinstance(usage, dict):
        state.input_tokens = state.output_tokens = None
        add_tokens(state, usage.get("input_tokens"), usage.get("output_tokens"))
    turns = count(event.get("num_turns"))
    if turns is not None:
        state.turns = turns
    subtype = text(event.get("subtype"))
    if subtype == "success" and event.get("is_error") is not True:
        # The final word: a stray error line or a rejected-then-retried rate limit before a
        # successful result does not make the run a failure.
        state.outcome, state.error = None, ""
    elif subtype in _SUBTYPES:
        state.outcome = _SUBTYPES[subtype]
        state.error = subtype
    elif event.get("is_error") is True or subtype.startswith("error"):
        errors = event.get("errors")
        detail = (
            final or (" ".join(map(str, errors)) if isinstance(errors, list) else "") or subtype
        )
        note_error(state, detail)
    return "finished"


@attrs.frozen
class ClaudeAdapter(Adapter):
    """Claude Code (``params.agent: claude``)."""

    name: str = "claude"
    command: str = "claude"
    #: ``total_cost_usd`` after ``--resume`` covers the whole session, earlier runs included.
    cumulative_cost: bool = True

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", "plan"] if invocation.read_only else permission_args()
        if invocation.model:
            argv += ["--model", invocation.model]
        if invocation.max_turns:
            argv += ["--max-turns", str(invocation.max_turns)]
        if invocation.max_budget_usd:
            argv += ["--max-budget-usd", f"{invocation.max_budget_usd:g}"]
        if invocation.resume_session:
            argv += ["--resume", invocation.resume_session]
        # after "--": a prompt starting with "-" (front matter) is never read as an option
        return [*argv, *invocation.extra_args, "--", invocation.prompt]

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        # No auto-update or telemetry from a fleet of headless sessions, and few retries of its
        # own: Claude Code retries a 429 (and a 401) ten times over minutes by default, while
        # SHIM cools the agent down fleet-wide instead.
        return {
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "2",
        }

    def feed(self, line: str, state: AgentState) -> str | None:
        return read_stream_json(line, state)
