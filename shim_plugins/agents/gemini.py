"""Gemini CLI: ``gemini -p PROMPT -o stream-json --yolo --skip-trust``.

Verified against recorded output of Gemini CLI 0.61.0 (offline, against a stub of its API): it
needs ``GEMINI_API_KEY`` and, with ``GOOGLE_GEMINI_BASE_URL``, a settings file selecting the
``gemini-api-key`` auth type. It reports tokens but no cost, and retries a 429 for about five
minutes by itself before it gives up.

Events read: ``init`` (session id), ``message`` (assistant text, possibly in deltas),
``tool_use``, ``tool_result``, ``error``, ``result`` (status and stats with tokens).
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
    plain_line,
    text,
)


def read_gemini_json(line: str, state: AgentState) -> str | None:
    event = json_object(line)
    if event is None:
        plain_line(line, state)
        return None
    kind = text(event.get("type"))
    if kind != "message":
        state.last_event = kind
    if kind == "init":
        state.session_id = text(event.get("session_id")) or state.session_id
        return None
    if kind == "message":
        return _message(event, state)
    if kind == "tool_use":
        state.tool_calls += 1
        return f"tool {text(event.get('tool_name')) or '?'}"
    if kind == "tool_result":
        return None
    if kind == "error":
        note_error(state, text(event.get("message")) or "error")
        return None
    if kind == "result":
        return _result(event, state)
    state.unknown_lines += 1
    return None


def _message(event: dict[str, Any], state: AgentState) -> str | None:
    if text(event.get("role")) != "assistant":
        return None
    content = text(event.get("content"))
    if event.get("delta") is True and state.last_event == "message":
        state.summary = clip(state.summary + content)
        return None
    state.last_event = "message"
    state.summary = clip(content)
    state.turns += 1
    return state.summary.strip().splitlines()[0][:120] if state.summary.strip() else None


def _result(event: dict[str, Any], state: AgentState) -> str | None:
    state.final = True
    stats = event.get("stats")
    if isinstance(stats, dict):
        add_tokens(state, stats.get("input_tokens"), stats.get("output_tokens"))
    if text(event.get("status")) == "success":
        state.outcome, state.error = None, ""  # the final word wins over earlier error events
    elif text(event.get("status")) != "":
        error = event.get("error")
        message = text(error.get("message")) if isinstance(error, dict) else ""
        note_error(state, message or text(event.get("status")))
    return "finished"


@attrs.frozen
class GeminiAdapter(Adapter):
    """Google Gemini CLI (``params.agent: gemini``)."""

    name: str = "gemini"
    command: str = "gemini"

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        return {"GEMINI_CLI_NO_RELAUNCH": "true"}  # no second node process: 3 s faster start

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        # --prompt=...: a prompt starting with "-" is never read as an option
        argv = [binary, f"--prompt={invocation.prompt}", "-o", "stream-json", "--skip-trust"]
        # --yolo offers the write and shell tools; without it, headless Gemini has none
        argv += [] if invocation.read_only else ["--yolo"]
        if invocation.model:
            argv += ["-m", invocation.model]
        if invocation.resume_session:
            argv += ["--resume", invocation.resume_session]
        return argv + list(invocation.extra_args)

    def feed(self, line: str, state: AgentState) -> str | None:
        return read_gemini_json(line, state)
