"""Aider: ``aider --message PROMPT --yes-always`` (plain text output).

Aider prints no structured events: the adapter reads its token and cost lines (``Tokens: 2.1k
sent, 150 received. Cost: $0.0012 message, $0.0034 session.``), the files it applied edits to,
and error lines (rate limits and refused keys by their words). A run that exits 0 is final; the
summary is the last lines of text it printed.
"""

from __future__ import annotations

import re

import attrs

from shim_core.contracts import AgentInvocation, AgentState
from shim_plugins.agents._common import Adapter, clip, note_error

_TOKENS = re.compile(
    r"Tokens:\s*(?P<sent>[\d.,]+)(?P<sk>[km]?)\s*sent.*?(?P<recv>[\d.,]+)(?P<rk>[km]?)\s*received",
    re.IGNORECASE,
)
_COST = re.compile(r"Cost:.*?\$(?P<session>[\d.]+)\s*session", re.IGNORECASE)
_APPLIED = re.compile(r"^Applied edit to (?P<file>.+)$")
#: Lines aider prints about itself, not the agent's answer.
_BANNER = ("Aider v", "Model:", "Git repo:", "Repo-map:", "https://aider.chat", "Update git ")
#: Aider's own error reports (litellm's exceptions and its advice after them). Anything else it
#: prints may be the model's code or text ("raise ValueError", "except RateLimitError"), which
#: must never type the run.
_ERROR = re.compile(
    r"^(?:litellm\.\w+(?:Error|Exception)\b|The API provider (?:is not able to authenticate|"
    r"has rate limited)|Error: )"
)


def _amount(value: str, suffix: str) -> int:
    number = float(value.replace(",", ""))
    return int(number * {"k": 1_000, "m": 1_000_000}.get(suffix.lower(), 1))


def read_aider_text(line: str, state: AgentState) -> str | None:
    stripped = line.strip()
    if not stripped:
        return None
    tokens = _TOKENS.search(stripped)
    if tokens:
        state.turns += 1
        state.input_tokens = (state.input_tokens or 0) + _amount(tokens["sent"], tokens["sk"])
        state.output_tokens = (state.output_tokens or 0) + _amount(tokens["recv"], tokens["rk"])
        cost = _COST.search(stripped)
        if cost:
            state.cost_usd = float(cost["session"])
        return None
    applied = _APPLIED.match(stripped)
    if applied:
        state.tool_calls += 1
        return f"edited {applied['file'][:80]}"
    if _ERROR.match(stripped):
        note_error(state, stripped)
        return None
    if not stripped.startswith(_BANNER):
        state.summary = clip((state.summary + "\n" + stripped).strip()[-2_000:])
    return None


@attrs.frozen
class AiderAdapter(Adapter):
    """Aider (``params.agent: aider``)."""

    name: str = "aider"
    command: str = "aider"

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        argv = [
            binary,
            "--message-file",
            str(invocation.prompt_file),
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--no-show-model-warnings",
            "--no-fancy-input",
            "--no-auto-commits",  # SHIM commits on the task branch when aider exits
        ]
        if invocation.model:
            argv += ["--model", invocation.model]
        if invocation.read_only:
            argv.append("--dry-run")
        return argv + list(invocation.extra_args)

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        # No analytics, and litellm's price list from the package instead of the network.
        return {"AIDER_ANALYTICS": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    def feed(self, line: str, state: AgentState) -> str | None:
        return read_aider_text(line, state)

    def finish(self, exit_code: int, state: AgentState) -> None:
        state.final = state.final or exit_code == 0
