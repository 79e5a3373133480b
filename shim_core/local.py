"""The embedded default of ``shim run``: a private Redis and local workers, nothing to set up.

When ``redis-server`` is on PATH, a private one listens on a unix socket in a temporary directory
(no TCP port) and is stopped and removed afterwards; otherwise an in-process fakeredis runs the
same Lua scripts. Either way the local workers are threads of this process.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import attrs
import redis

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, forget_embedded
from shim_core.errors import ShimError
from shim_core.models import new_id
from shim_core.plugins import Plugins
from shim_core.redact import mask_url
from shim_core.supervisor.supervisor import Supervisor
from shim_core.worker import Worker, WorkerConfig

#: Seconds a private redis-server gets to accept connections.
START_TIMEOUT = 10.0


class LocalRedis:
    """A private Redis for one run: ``with LocalRedis() as url: ...``."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server")
        self.url = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        if self._process is not None:
            return "a private redis-server on a unix socket"
        return "the in-process embedded Redis (fakeredis; install redis-server for a real one)"

    def __enter__(self) -> str:
        if self.binary:
            self._dir = tempfile.TemporaryDirectory(prefix="shim-run-")
            sock = Path(self._dir.name) / "redis.sock"
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    "0",
                    "--unixsocket",
                    str(sock),
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._dir.name,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # A session of its own: Ctrl-C in the terminal reaches `shim run` (which cancels
                # the run and stops this server), not the server under the run's feet.
                start_new_session=True,
            )
            self.url = f"unix://{sock}"
            wait_for_redis(self._process, redis.Redis(unix_socket_path=str(sock)))
        else:
            self.url = f"embedded://run-{new_id()[:8]}"
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
        if self.url.startswith("embedded://"):
            forget_embedded(self.url.removeprefix("embedded://"))


def wait_for_redis(
    process: subprocess.Popen[bytes], client: redis.Redis, timeout: float = START_TIMEOUT
) -> None:
    """Wait until a redis-server just started as ``process`` answers PING through ``client``
    (closed afterwards); raise ShimError if it exits or does not answer within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise ShimError(f"redis-server exited at start: {err.strip()}")
            try:
                client.ping()
                return
            except redis.ConnectionError:  # not listening yet (a missing socket file too)
                if time.monotonic() > deadline:
                    raise ShimError(f"redis-server did not answer within {timeout:g} s") from None
            time.sleep(0.01)
    finally:
        client.close()


class LocalWorkers:
    """``count`` in-process workers (threads) on ``settings``' namespace, allowed to run the
    executors in ``allow`` (see :class:`~shim_core.worker.WorkerConfig`)."""

    def __init__(
        self,
        connection: RedisConnectionManager,
        settings: Settings,
        count: int,
        *,
        default_executor: str | None = None,
        plugins: Plugins | None = None,
        heartbeat_interval: float = 1.0,
        allow: Collection[str] = (),
    ) -> None:
        plugins = plugins if plugins is not None else Plugins()
        self.workers = [
            Worker(
                connection,
                settings,
                WorkerConfig(
                    worker_id=f"local-{n + 1}-{new_id()[:6]}",
                    name=f"local-{n + 1}",
                    default_executor=default_executor,
                    heartbeat_interval=heartbeat_interval,
                    claim_block=0.2,
                    allow=allow,
                ),
                plugins=plugins,
            )
            for n in range(count)
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, grace: float = 5.0) -> None:
        for worker in self.workers:
            worker.feed.stop_claiming()
        for worker in self.workers:
            worker.stop(grace=grace)


class LocalSession:
    """What ``shim run`` runs a plan in: the Redis (a private one, or the fleet's), a supervisor
    with its reaper, and ``workers`` local workers; all stopped on exit.

    ``with LocalSession(settings, workers=3) as session: session.supervisor.submit(...)``
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        default_executor: str | None = None,
        plugins: Plugins | None = None,
        allow: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.default_executor = default_executor
        self.allow = frozenset(allow)
        self.plugins = plugins if plugins is not None else Plugins()
        self.private = settings.redis_url.startswith("embedded:")
        self._redis = LocalRedis() if self.private else None
        self._stack = contextlib.ExitStack()
        self.supervisor: Supervisor

    @property
    def where(self) -> str:
        """Where the run's Redis is, fit to print (password masked)."""
        return self._redis.description if self._redis else mask_url(self.settings.redis_url)

    def __enter__(self) -> LocalSession:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(self._redis) if self._redis else self.settings.redis_url
            self.settings = attrs.evolve(self.settings, redis_url=url)
            connection = (  # the private server speaks plain TCP on loopback
                RedisConnectionManager(url)
                if self.private
                else RedisConnectionManager.for_settings(self.settings)
            )
            connection.connect()
            stack.callback(connection.disconnect)
            self.supervisor = Supervisor(connection, self.settings, plugins=self.plugins)
            stack.callback(self.supervisor.stop)
            fleet = LocalWorkers(
                connection,
                self.settings,
                self.workers,
                default_executor=self.default_executor,
                plugins=self.plugins,
                allow=self.allow,
            )
            stack.callback(fleet.stop)
            fleet.start()
            self.supervisor.start()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
