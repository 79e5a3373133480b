"""Small helpers shared by the tests (no fixtures here: those live in pytest_shim)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def server_ms(client: Any) -> int:
    """The Redis server's clock in epoch milliseconds (the clock the scripts decide by)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
