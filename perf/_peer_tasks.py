"""Importable no-op job for the peer comparison (RQ resolves jobs by dotted path)."""

from __future__ import annotations


def noop() -> None:
    """The job every system runs: nothing, so only the queue's own cost is measured."""
    return None
