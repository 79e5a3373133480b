"""The task body of the scalability benchmark: sleep ``params["seconds"]`` (a task of known
length)."""

from __future__ import annotations

import time
from typing import Any


def pause(task: Any, ctx: Any) -> float:
    """Sleep for the task's ``seconds`` param; the result is the time slept."""
    seconds = float(task.params.get("seconds", 0.0))
    time.sleep(seconds)
    return seconds
