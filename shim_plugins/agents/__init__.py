"""Adapters for coding-agent CLIs, used by the ``agent`` executor: each builds its CLI's command
line and reads its output into an :class:`~shim_core.contracts.AgentState`."""

from shim_plugins.agents.aider import AiderAdapter
from shim_plugins.agents.claude import ClaudeAdapter
from shim_plugins.agents.codex import CodexAdapter
from shim_plugins.agents.gemini import GeminiAdapter
from shim_plugins.agents.generic import GenericAdapter
from shim_plugins.agents.opencode import OpenCodeAdapter

__all__ = [
    "AiderAdapter",
    "ClaudeAdapter",
    "CodexAdapter",
    "GeminiAdapter",
    "GenericAdapter",
    "OpenCodeAdapter",
]
