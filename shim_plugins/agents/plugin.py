"""Registers SHIM's built-in agent adapters (entry point ``shim``: ``shim-agents``)."""

from __future__ import annotations

from shim_core.contracts import AgentAdapter
from shim_core.hookspecs import hookimpl
from shim_plugins.agents.aider import AiderAdapter
from shim_plugins.agents.claude import ClaudeAdapter
from shim_plugins.agents.codex import CodexAdapter
from shim_plugins.agents.gemini import GeminiAdapter
from shim_plugins.agents.generic import GenericAdapter
from shim_plugins.agents.opencode import OpenCodeAdapter


@hookimpl
def shim_agent_adapters() -> list[AgentAdapter]:
    """Claude Code, Codex, Gemini CLI, OpenCode, Aider and the generic template adapter."""
    return [
        ClaudeAdapter(),
        CodexAdapter(),
        GeminiAdapter(),
        OpenCodeAdapter(),
        AiderAdapter(),
        GenericAdapter(),
    ]
