"""OpenAI Codex CLI: ``codex exec --json PROMPT`` (resume: ``codex exec resume ID``).

Codex's exit code reflects protocol health, not the task (openai/codex#37717), so the outcome is
read from the events: ``thread.started`` (session id), ``item.*`` (agent messages, commands,
file changes), ``turn.completed`` (usage, the final result), ``turn.failed`` and ``error``.
Codex reports tokens but no cost. ``error`` events are often retry notices ("Reconnecting...
1/5") on runs that then succeed: only ``turn.failed``, or an error with no completed turn,
fails a run.

Codex runs in its ``workspace-write`` sandbox (it may write only in the task's worktree and temp
folders); ``params.sandbox: bypass`` turns the sandbox off, e.g. where the kernel lacks what it
needs, and ``params.sandbox: read-only`` forbids writes.
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

SANDBOXES = ("workspace-write", "read-only", "bypass")


def read_codex_json(line: str, state: AgentState) -> str | None:
    event = json_object(line)
    if event is None:
        plain_line(line, state)
        return None
    kind = text(event.get("type"))
    if kind == "thread.started":
        state.session_id = text(event.get("thread_id")) or state.session_id
        return None
    if kind == "turn.started":
        state.turns += 1
        return None
    if kind.startswith("item."):
        return _item(event.get("item"), state, done=kind == "item.completed")
    if kind == "turn.completed":
        state.final = True
        usage = event.get("usage")
        if isinstance(usage, dict):
            add_tokens(state, usage.get("input_tokens"), usage.get("output_tokens"))
        return "finished"
    if kind == "turn.failed":
        error = event.get("error")
        message = text(error.get("message")) if isinstance(error, dict) else ""
        note_error(state, message or kind)
        return None
    if kind == "error":  # may be transient ("Reconnecting... 1/5"): typed only if no turn ends
        state.error = clip(text(event.get("message")) or kind, 2_000)
        return None
    state.unknown_lines += 1
    return None


def _item(item: Any, state: AgentState, *, done: bool) -> str | None:
    if not isinstance(item, dict):
        state.unknown_lines += 1
        return None
    kind = text(item.get("type") or item.get("item_type"))
    if kind in ("agent_message", "assistant_message") and done:
        message = text(item.get("text")).strip()
        if message:
            state.summary = clip(message)
            return message.splitlines()[0][:120]
    elif kind == "command_execution" and not done:
        state.tool_calls += 1
        return f"tool shell: {text(item.get('command'))[:80]}"
    elif kind in ("file_change", "mcp_tool_call", "web_search") and done:
        state.tool_calls += 1
        return f"tool {kind}"
    elif kind == "error":
        note_error(state, text(item.get("message")) or "error")
    return None


@attrs.frozen
class CodexAdapter(Adapter):
    """OpenAI Codex (``params.agent: codex``)."""

    name: str = "codex"
    command: str = "codex"

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        sandbox = (
            "read-only"
            if invocation.read_only
            else invocation.options.get("sandbox", "workspace-write")
        )
        if sandbox not in SANDBOXES:
            raise ValueError(f"param 'sandbox' must be one of {', '.join(SANDBOXES)}")
        argv = [binary, "exec"]
        if sandbox == "bypass":
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:  # before `resume`: a resumed session does not remember its sandbox
            argv += ["--sandbox", str(sandbox)]
        if invocation.resume_session:
            argv += ["resume", invocation.resume_session]
        argv += ["--json", "--skip-git-repo-check"]
        if invocation.model:
            argv += ["--model", invocation.model]
        return [*argv, *invocation.extra_args, "--", invocation.prompt]

    def feed(self, line: str, state: AgentState) -> str | None:
        return read_codex_json(line, state)

    def finish(self, exit_code: int, state: AgentState) -> None:
        if not state.final and state.error and state.outcome is None:
            note_error(state, state.error)
