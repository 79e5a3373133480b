"""The task body of the worker soak: a counter incremented per task (the issue's no-op body)."""

from __future__ import annotations

import itertools
from typing import Any

_count = itertools.count(1)


def bump(task: Any, ctx: Any) -> int:
    """Count the task; the result is the running count."""
    return next(_count)
