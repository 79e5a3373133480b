"""One warning when Redis stops answering, one when it answers again, and a count between.

A worker's feed, heartbeat and reaper each retry on their own while Redis is away; logging every
retry turned a 40 s outage into hundreds of lines. They share one :class:`OutageLog` instead.
"""

from __future__ import annotations

import logging
import threading
import time


class OutageLog:
    """Tracks one outage at a time for the components that share it (thread-safe)."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._since: float | None = None
        #: Failed calls in the current outage (0 while Redis answers).
        self.failures = 0
        #: Outages seen since this object was made.
        self.outages = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, doing: str, exc: BaseException) -> None:
        """A call failed: the first failure of an outage is logged, the others counted."""
        with self._lock:
            self.failures += 1
            first = self._since is None
            if first:
                self._since = time.monotonic()
                self.outages += 1
        if first:
            self._log.warning("%s failed: %s; retrying quietly until Redis answers", doing, exc)
        else:
            self._log.debug("%s failed again: %s", doing, exc)

    def succeeded(self) -> None:
        """A call went through: ends the outage, if there was one, with one line."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, failures = self._since, self.failures
            self._since, self.failures = None, 0
        if since is not None:
            self._log.warning(
                "Redis answers again after %.1f s (%d failed call(s) meanwhile)",
                time.monotonic() - since,
                failures,
            )
