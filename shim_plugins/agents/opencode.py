"""OpenCode: ``opencode run --format json --dir WORKDIR --auto PROMPT``.

Verified against OpenCode 1.18.33 run offline (tests/agents/test_gemini_opencode_offline.py).

Events read (each with a ``sessionID``): ``text`` (assistant text), ``tool_use``, ``step_start``,
``step_finish`` (tokens and cost of the step), ``error``.
"""

from __future__ import annotations

from typing import Any

import attrs

from shim_core.contracts import AgentInvocation, AgentState
from shim_plugins.agents._common import (
    Adapter,
    add_tokens,
    clip,
    json_object,
    note_error,
    number,
    plain_line,
    text,
)


def read_opencode_json(line: str, state: AgentState) -> str | None:
    event = json_object(line)
    if event is None:
        plain_line(line, state)
        return None
    kind = text(event.get("type"))
    session = text(event.get("sessionID"))
    if session and not state.session_id:
        state.session_id = session
    part = event.get("part")
    part = part if isinstance(part, dict) else {}
    if kind == "step_start":
        state.turns += 1
        return None
    if kind == "text":
        content = text(part.get("text")).strip()
        if content:
            state.summary = clip(content)
            return content.splitlines()[0][:120]
        return None
    if kind == "tool_use":
        state.tool_calls += 1
        return f"tool {text(part.get('tool')) or '?'}"
    if kind == "step_finish":
        return _step_finish(part, state)
    if kind == "error":
        note_error(state, _error_text(event.get("error")) or "error")
        return None
    state.unknown_lines += 1
    return None


def _step_finish(part: dict[str, Any], state: AgentState) -> str | None:
    tokens = part.get("tokens")
    if isinstance(tokens, dict):
        add_tokens(state, tokens.get("input"), tokens.get("output"))
    cost = number(part.get("cost"))
    if cost is not None:
        state.cost_usd = (state.cost_usd or 0.0) + cost
    if text(part.get("reason")) in ("stop", "end_turn", ""):
        state.final = True
    return None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data")
        if isinstance(data, dict) and text(data.get("message")):
            return text(data.get("message"))
        return text(error.get("message")) or text(error.get("name"))
    return text(error)


@attrs.frozen
class OpenCodeAdapter(Adapter):
    """OpenCode (``params.agent: opencode``)."""

    name: str = "opencode"
    command: str = "opencode"

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        # --dir: opencode 1.18 works in $PWD, not in its real working directory, and the
        # worker's PWD is inherited (it would edit the worker's directory, not the worktree).
        # --auto: a permission that asks is otherwise auto-rejected in `run` (a config with
        # "edit": "ask" fails every edit); what the config explicitly denies stays denied.
        argv = [binary, "run", "--format", "json", "--dir", str(invocation.workdir)]
        argv += [] if invocation.read_only else ["--auto"]  # without it, asking is refusing
        if invocation.model:
            argv += ["--model", invocation.model]
        if invocation.resume_session:
            argv += ["--session", invocation.resume_session]
        return [*argv, *invocation.extra_args, "--", invocation.prompt]

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        return {"OPENCODE_DISABLE_AUTOUPDATE": "1"}  # no self-update from a fleet of sessions

    def feed(self, line: str, state: AgentState) -> str | None:
        return read_opencode_json(line, state)
