"""What the adapters share: tolerant JSON line parsing and reading errors by their words."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shim_core.contracts import AgentInvocation, AgentState
from shim_core.models import TaskOutcome

#: Longest summary kept from a CLI's final text (the rest is in the task log).
SUMMARY_CHARS = 8_000

_RATE = re.compile(
    r"\b429\b|rate[ _-]?limit|too many requests|usage limit|quota exceeded|check quota|"
    r"resource[ _]exhausted|resource has been exhausted",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"\b401\b|\b403\b|authentication[ _]?error|unauthori[sz]ed|invalid[ _-]?(?:x-)?api[ _-]?key|"
    r"api key (?:is )?(?:missing|not (?:set|valid))|not logged in|please (?:log ?in|run /login)|"
    r"permission_denied|invalid bearer|incorrect api key",
    re.IGNORECASE,
)


def json_object(line: str) -> dict[str, Any] | None:
    """The JSON object on a line, or None for anything else (text, arrays, broken JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def error_outcome(text: str) -> TaskOutcome:
    """The outcome an error message describes: a rate limit, refused credentials, or a plain
    failure."""
    if _RATE.search(text):
        return TaskOutcome.RATE_LIMITED
    if _AUTH.search(text):
        return TaskOutcome.AUTH_FAILED
    return TaskOutcome.FAILED


def note_error(state: AgentState, text: str) -> None:
    """Record an error the CLI reported (the first typed one wins over a plain failure)."""
    outcome = error_outcome(text)
    if state.outcome in (None, TaskOutcome.FAILED) or outcome is not TaskOutcome.FAILED:
        state.outcome = outcome
    state.error = clip(text, 2_000)


def number(value: Any) -> float | None:
    """A finite non-negative number, else None (data from a CLI is untrusted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def count(value: Any) -> int | None:
    found = number(value)
    return int(found) if found is not None else None


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def clip(value: str, limit: int = SUMMARY_CHARS) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def add_tokens(state: AgentState, inputs: Any, outputs: Any) -> None:
    """Add a usage report's tokens to the totals."""
    i, o = count(inputs), count(outputs)
    if i is not None:
        state.input_tokens = (state.input_tokens or 0) + i
    if o is not None:
        state.output_tokens = (state.output_tokens or 0) + o


def reset_ms(value: Any) -> int | None:
    """A reset time given as epoch seconds or milliseconds, in epoch ms."""
    found = number(value)
    if found is None or found == 0:
        return None
    return int(found * 1000) if found < 10_000_000_000 else int(found)


def plain_line(line: str, state: AgentState) -> None:
    """A line that is not an event: an error message (typed by its words) or unknown text."""
    stripped = line.strip()
    if not stripped:
        return
    if "error" in stripped.lower():
        note_error(state, stripped)
    else:
        state.unknown_lines += 1


class Adapter:
    """Defaults for adapters: no extra environment, nothing to settle when the CLI exits."""

    def env(self, invocation: AgentInvocation) -> dict[str, str]:
        return {}

    def finish(self, exit_code: int, state: AgentState) -> None:
        return None
