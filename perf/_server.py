"""A private, throw-away redis-server for the benchmarks.

Every script in ``perf/`` either takes ``--redis-url`` or starts one of these: a redis-server on a
free loopback port, persistence off (``--save '' --appendonly no``), working files in a temporary
directory that is removed on stop. All systems of one run talk to the same server.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

DEFAULT_BINARY = "redis-server"
_START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on loopback; use as a context manager or call start / stop."""

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        *,
        wrapper: Sequence[str] = (),
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        """``wrapper``: a command that runs the server (``valgrind ...``), with a
        ``start_timeout`` long enough for it."""
        self.binary = binary
        self.wrapper = list(wrapper)
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    @property
    def url(self) -> str:
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 3) -> RedisServer:
        """Start the server and wait until it answers PING (retrying on a port race)."""
        path = shutil.which(self.binary) or self.binary
        last_error = ""
        for _ in range(attempts):
            self._dir = Path(tempfile.mkdtemp(prefix="shim-perf-redis-"))
            self.port = free_port()
            log = self._dir / "redis.log"
            self._proc = subprocess.Popen(
                [
                    *self.wrapper,
                    path,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self._dir),
                    "--logfile",
                    str(log),
                    "--daemonize",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            last_error = log.read_text(errors="replace")[-500:] if log.exists() else "no log"
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and delete its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` (use a running server) and ``--redis-server`` (binary to start)."""
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this running Redis instead of starting a private redis-server",
    )
    parser.add_argument(
        "--redis-server",
        default=DEFAULT_BINARY,
        help="redis-server binary to start when --redis-url is not given (default: %(default)s)",
    )


@contextlib.contextmanager
def redis_url(url: str | None, binary: str = DEFAULT_BINARY) -> Iterator[str]:
    """Yield ``url`` as it is, or the URL of a private server that is stopped on exit."""
    if url:
        yield url
        return
    with RedisServer(binary) as server:
        yield server.url


def describe(url: str) -> str:
    """'redis 7.0.15 at redis://...' for report headers."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        info = client.info("server")
        return f"redis {info.get('redis_version', '?')} at {url}"
    finally:
        client.close()


def purge(client: redis.Redis, pattern: str) -> int:
    """Delete every key matching ``pattern`` (SCAN + UNLINK); returns how many."""
    removed = 0
    batch: list[str] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed
