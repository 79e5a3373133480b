"""What the scripted model servers share: a threaded HTTP server on loopback, the script, and
the record of every request (thread-safe; the readers return copies)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar

JSON = dict[str, Any]
R = TypeVar("R")


@dataclass(frozen=True)
class Status:
    """An HTTP error reply; ``body`` defaults to the API's own error object for ``code``."""

    code: int
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then send nothing for ``seconds`` and drop the connection."""

    seconds: float


class ScriptedServer(Generic[R]):
    """Serves ``make_handler(self)`` on ``host:port`` (0: a free port) in a daemon thread and
    hands out the script's replies in order."""

    def __init__(
        self,
        script: Sequence[R],
        make_handler: Callable[[Any], type[BaseHTTPRequestHandler]],
        *,
        host: str,
        port: int,
        name: str,
        id_format: str,
    ) -> None:
        self._script: list[R] = list(script)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_format = id_format
        self._closed = threading.Event()
        self._requests: list[JSON] = []
        self._background: list[JSON] = []
        self._log: list[tuple[str, str, JSON | None]] = []
        self._times: list[float] = []
        self._httpd = ThreadingHTTPServer((host, port), make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=name, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """``http://host:port`` of the server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[JSON]:
        """JSON bodies of the conversation requests, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def background(self) -> list[JSON]:
        """JSON bodies of background requests (answered without the script)."""
        with self._lock:
            return list(self._background)

    @property
    def log(self) -> list[tuple[str, str, JSON | None]]:
        """Every request of any kind: ``(method, path, body or None)``."""
        with self._lock:
            return list(self._log)

    @property
    def request_times(self) -> list[float]:
        """``time.monotonic()`` of each conversation request, parallel to :attr:`requests`."""
        with self._lock:
            return list(self._times)

    @property
    def first_request_at(self) -> float | None:
        """``time.monotonic()`` of the first conversation request, or None."""
        with self._lock:
            return self._times[0] if self._times else None

    @property
    def remaining(self) -> int:
        """How many scripted replies have not been used yet."""
        with self._lock:
            return len(self._script)

    def add(self, *replies: R) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    def close(self) -> None:
        """Stop serving (hanging requests are released)."""
        if not self._closed.is_set():
            self._closed.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the handlers --------------------------------------------------------------

    def _record(self, method: str, path: str, body: JSON | None) -> None:
        with self._lock:
            self._log.append((method, path, body))

    def _take(self, body: JSON, script: list[R] | None, default: R) -> R:
        """Record a conversation request and take its reply (call with the lock held)."""
        self._requests.append(body)
        self._times.append(time.monotonic())
        script = self._script if script is None else script
        return script.pop(0) if script else default

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{format(next(self._ids), self._id_format)}"
