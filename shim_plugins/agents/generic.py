"""Any other agent CLI: an argv template, and output read as Claude-compatible stream-json (which
Amp, Qwen Code and Cursor's CLI also speak) or as plain text.

Params (under the task's ``params``)::

    agent: generic
    argv: ["amp", "-x", "{prompt}", "--stream-json"]   # placeholders: {prompt} {prompt_file}
                                                         # {workdir} {model} {session}
    format: stream-json                                 # or: text (default: text)
    resume_argv: ["amp", "threads", "continue", "{session}", "-x", "{prompt}", "--stream-json"]

A plain-text run is final when the CLI exits 0; its summary is the last lines it printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from shim_core.contracts import AgentInvocation, AgentState
from shim_plugins.agents._common import Adapter, clip
from shim_plugins.agents.claude import read_stream_json

FORMATS = ("stream-json", "text")


class TemplateError(ValueError):
    """The generic adapter's params are unusable (the message says which and why)."""


def _template(options: Mapping[str, Any], key: str) -> list[str]:
    value = options.get(key)
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(a, str) for a in value)
    ):
        raise TemplateError(f"param {key!r} of the generic agent must be a list of strings")
    return list(value)


def output_format(options: Mapping[str, Any]) -> str:
    fmt = options.get("format", "text")
    if fmt not in FORMATS:
        raise TemplateError(f"param 'format' must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return str(fmt)


@attrs.frozen
class GenericAdapter(Adapter):
    """A CLI described by its params (``params.agent: generic``)."""

    name: str = "generic"
    command: str = ""

    def argv(self, binary: str, invocation: AgentInvocation) -> list[str]:
        options = invocation.options
        output_format(options)
        key = "resume_argv" if invocation.resume_session and "resume_argv" in options else "argv"
        values = {
            "prompt": invocation.prompt,
            "prompt_file": str(invocation.prompt_file),
            "workdir": str(invocation.workdir),
            "model": invocation.model or "",
            "session": invocation.resume_session or "",
        }
        argv = []
        for arg in _template(options, key):
            try:
                argv.append(arg.format_map(values))
            except (KeyError, ValueError, IndexError) as exc:
                raise TemplateError(f"bad placeholder in {arg!r}: {exc}") from None
        if binary:
            argv[0] = binary
        return argv + list(invocation.extra_args)

    def feed(self, line: str, state: AgentState) -> str | None:
        if state.options.get("format") == "stream-json":
            return read_stream_json(line, state)
        return self._text(line, state)

    def _text(self, line: str, state: AgentState) -> str | None:
        stripped = line.strip()
        if stripped:
            state.summary = clip((state.summary + "\n" + stripped).strip()[-2_000:])
        return None

    def finish(self, exit_code: int, state: AgentState) -> None:
        if state.options.get("format") != "stream-json":
            state.final = state.final or exit_code == 0
