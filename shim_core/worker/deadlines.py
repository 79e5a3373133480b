"""Time limits of running tasks, kept by one thread per worker instead of a timer thread per
task (starting and stopping a thread for every task is a cost in a worker's hottest loop)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

#: A heap this many entries over the live ones (cancelled deadlines not yet due) is rebuilt.
_SLACK = 256


class Deadlines:
    """Calls ``callback`` when its deadline passes, unless cancelled first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` in ``seconds``; returns a handle for :meth:`cancel`."""
        handle = next(self._ids)
        with self._cond:
            self._live[handle] = callback
            heapq.heappush(self._heap, (time.monotonic() + seconds, handle))
            if len(self._heap) > 2 * len(self._live) + _SLACK:
                self._heap = [entry for entry in self._heap if entry[1] in self._live]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shim-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][1] == handle:
                self._cond.notify()  # an earlier deadline than the one being waited for
        return handle

    def cancel(self, handle: int) -> None:
        """Forget a deadline (harmless if it already fired)."""
        with self._cond:
            self._live.pop(handle, None)

    def pending(self) -> int:
        """Deadlines not yet fired nor cancelled."""
        with self._cond:
            return len(self._live)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                _, handle = heapq.heappop(self._heap)
                callback = self._live.pop(handle, None)
            if callback is not None:
                callback()
