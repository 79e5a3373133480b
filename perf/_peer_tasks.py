"""SHIM's task body in ``peers.py``: ``perf._peer_tasks:bump``, run by the ``python`` executor."""

from __future__ import annotations

from typing import Any

from perf.peer_drivers._body import bump as _bump


def bump(task: Any, ctx: Any) -> int:
    """Count the task (see ``perf/peer_drivers/_body.py``); ``params["sent"]`` marks a sample."""
    return _bump(task.params.get("sent"))
