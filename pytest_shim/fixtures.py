"""The fixtures and hooks of SHIM's pytest plugin (registered by :mod:`pytest_shim.plugin`).

A real redis-server per test session, a namespace per test, fakeredis as the fallback.

Options (each also an ini key with ``-`` replaced by ``_``):

* ``--shim-redis-server PATH``  redis-server binary (default: the one on PATH)
* ``--shim-redis-url URL``      use this running server instead of starting one

Without a binary or URL the fixtures fall back to fakeredis (a fresh in-process server per test)
and tests marked ``shim_real_redis`` are skipped with the reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import redis

from pytest_shim.fleet import Fleet
from pytest_shim.server import (
    RedisClusterGroup,
    RedisServer,
    SentinelServer,
    find_redis_server,
    replica_in_sync,
    replication_info,
    sentinel_url,
)
from shim_core.bus import MessageBus
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, forget_embedded
from shim_core.keys import Keys
from shim_core.queue import TaskQueue
from shim_core.redact import mask_url

_BACKEND = pytest.StashKey["Backend"]()
#: Seconds after which a failover the sentinels have not carried out is asked for again (their
#: failover-timeout is 3 s: an attempt they abandoned is not retried by itself).
_FAILOVER_RETRY_S = 6.0


class Backend:
    """Where this session's tests get Redis from."""

    def __init__(self, binary: str | None, url: str | None) -> None:
        self.binary = binary
        self.url = url
        self.server: RedisServer | None = None

    @property
    def real(self) -> bool:
        return bool(self.binary or self.url)

    def describe(self) -> str:
        if self.url:
            return f"shim: using the Redis server at {mask_url(self.url)}"
        if self.binary:
            return f"shim: real redis-server ({self.binary}) on a free loopback port"
        return (
            "shim: no redis-server found: using fakeredis; "
            "tests marked shim_real_redis will be skipped"
        )

    def test_url(self) -> str:
        if self.url:
            return self.url
        if self.binary:
            if self.server is None:
                self.server = RedisServer(self.binary).start()
            return self.server.url
        return f"embedded://{uuid.uuid4().hex}"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name.replace("-", "_")) or config.getini(name.replace("-", "_"))
    return str(value) if value else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shim_real_redis: needs a real redis-server (skipped on fakeredis)"
    )
    url = _option(config, "shim-redis-url")
    binary = None if url else find_redis_server(_option(config, "shim-redis-server"))
    config.stash[_BACKEND] = Backend(binary, url)


def pytest_unconfigure(config: pytest.Config) -> None:
    backend = config.stash.get(_BACKEND, None)
    if backend is not None:
        backend.close()


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_BACKEND].describe()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shim_real_redis") and not item.config.stash[_BACKEND].real:
        pytest.skip("needs a real redis-server (none on PATH; only fakeredis is available)")


@pytest.fixture
def shim_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL for this test: the session's real server, or a fresh fakeredis server."""
    url = request.config.stash[_BACKEND].test_url()
    yield url
    if url.startswith("embedded://"):
        forget_embedded(url.removeprefix("embedded://"))


@pytest.fixture
def shim_real_redis(request: pytest.FixtureRequest) -> bool:
    """True when the tests run on a real redis-server."""
    return bool(request.config.stash[_BACKEND].real)


@pytest.fixture
def shim_settings(shim_redis_url: str) -> Settings:
    """Default settings on this test's URL, in a namespace of its own (safe under xdist)."""
    return Settings(redis_url=shim_redis_url, namespace=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def shim_connection(shim_settings: Settings) -> Iterator[RedisConnectionManager]:
    """A connected manager; every key of the test's namespace is deleted afterwards."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    manager.connect()
    yield manager
    delete_namespace(manager, shim_settings.namespace)
    manager.disconnect()


@pytest.fixture
def shim_queue(shim_connection: RedisConnectionManager, shim_settings: Settings) -> TaskQueue:
    """A TaskQueue on the test's namespace."""
    return TaskQueue(shim_connection, shim_settings)


@pytest.fixture
def shim_bus(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> Iterator[MessageBus]:
    """A MessageBus on the test's namespace, closed afterwards."""
    bus = MessageBus(shim_connection, shim_settings)
    yield bus
    bus.close()


@pytest.fixture
def shim_redis_server_factory(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., RedisServer]]:
    """Start dedicated redis-servers (e.g. ``appendonly=True`` to crash and restart them)."""
    backend: Backend = request.config.stash[_BACKEND]
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        if not backend.binary:
            pytest.skip("needs a redis-server binary to start a dedicated server")
        server = RedisServer(backend.binary, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@attrs.frozen
class SentinelGroup:
    """A master, its replica and three sentinels on loopback (``url``: the Sentinel URL)."""

    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]
    url: str

    def current_master_port(self) -> int:
        """The master's port, as the sentinels see it now."""
        sentinel = self.sentinels[0]
        return int(_sentinel(sentinel.port, "GET-MASTER-ADDR-BY-NAME", sentinel.service)[1])

    def failover(self, timeout: float = 30.0) -> int:
        """Fail the master over to the replica (SENTINEL FAILOVER) and wait until the old master
        replicates the new one; returns the new master's port."""
        old = self.current_master_port()
        deadline = time.monotonic() + timeout
        asked = self._ask_failover(deadline)
        while True:
            new = self.current_master_port()
            if new != old and replica_in_sync(old):
                return new
            now = time.monotonic()
            if now > deadline:
                try:
                    info = replication_info(old)
                except redis.RedisError as exc:  # the old master is down: say so
                    info = {"role": f"unreachable ({exc})"}
                raise TimeoutError(
                    f"no failover from port {old} within {timeout} s: the sentinels name "
                    f"{new} as master; port {old} is {info.get('role')}, link "
                    f"{info.get('master_link_status')}"
                )
            if new == old and now - asked > _FAILOVER_RETRY_S:
                # A failover the sentinel gave up on (its failover-timeout passed while a
                # loaded machine kept the replica from answering) is not retried by itself.
                asked = self._ask_failover(deadline)
            time.sleep(0.05)

    def _ask_failover(self, deadline: float) -> float:
        """Send SENTINEL FAILOVER until a sentinel accepts it or has one in progress, retrying
        while its view of the replica is too stale to promote it; returns when it was sent."""
        while True:
            try:
                _sentinel(self.sentinels[0].port, "FAILOVER", self.sentinels[0].service)
                return time.monotonic()
            except redis.ResponseError as exc:
                if "INPROGRESS" in str(exc):
                    return time.monotonic()
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _sentinel(port: int, *command: Any) -> Any:
    """The reply of ``SENTINEL <command>`` from the sentinel on ``port``."""
    client = redis.Redis(port=port, decode_responses=True)
    try:
        return client.execute_command("SENTINEL", *command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


@pytest.fixture
def shim_sentinel_group(
    shim_redis_server_factory: Callable[..., RedisServer],
) -> Iterator[SentinelGroup]:
    """A real master, replica and three sentinels (quorum 2) on loopback, ready to fail over."""
    master = shim_redis_server_factory()
    replica = shim_redis_server_factory(args=["--replicaof", "127.0.0.1", str(master.port)])
    deadline = time.monotonic() + 30
    while not replica_in_sync(replica.port):
        if time.monotonic() > deadline:
            raise TimeoutError("the replica did not sync with its master")
        time.sleep(0.05)
    sentinels: list[SentinelServer] = []
    try:
        for _ in range(3):
            sentinels.append(SentinelServer(master.binary, master.port).start())
        while True:  # each sentinel knows the replica and the two other sentinels
            known = [
                (len(_sentinel(p, "REPLICAS", "shim")), len(_sentinel(p, "SENTINELS", "shim")))
                for p in (s.port for s in sentinels)
            ]
            if all(r >= 1 and n >= 2 for r, n in known):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sentinels did not find each other: {known}")
            time.sleep(0.1)
        yield SentinelGroup(master, replica, sentinels, sentinel_url(sentinels))
    finally:
        for sentinel in sentinels:
            sentinel.close()


@pytest.fixture
def shim_redis_cluster(request: pytest.FixtureRequest) -> Iterator[RedisClusterGroup]:
    """A real Redis Cluster on loopback: three masters with a replica each."""
    backend: Backend = request.config.stash[_BACKEND]
    if not backend.binary:
        pytest.skip("needs a redis-server binary to build a cluster")
    group = RedisClusterGroup(backend.binary)
    try:
        yield group.start()
    finally:
        group.close()


def delete_namespace(manager: RedisConnectionManager, namespace: str) -> int:
    """Delete every key of ``namespace``; returns how many were deleted."""
    client = manager.get_client()
    pattern = Keys(namespace).pattern()
    deleted = 0
    batch: list[str] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


@pytest.fixture
def shim_fleet_factory(
    request: pytest.FixtureRequest,
    shim_settings: Settings,
    shim_connection: Any,
    tmp_path: Any,
) -> Iterator[Callable[..., Fleet]]:
    """Build fleets on the test's namespace: ``shim_fleet_factory(workers=2, heartbeat=0.5)``.

    Process workers on a real server, thread workers on fakeredis (``mode=`` to choose).
    Every fleet is stopped after the test.
    """
    backend: Backend = request.config.stash[_BACKEND]
    fleets: list[Fleet] = []

    def build(workers: int | None = None, *, mode: str | None = None, **options: Any) -> Fleet:
        chosen = mode or ("process" if backend.real else "thread")
        if chosen == "process" and not backend.real:
            pytest.skip("process fleets need a real redis-server (only fakeredis is available)")
        fleet = Fleet(shim_settings, mode=chosen, log_dir=tmp_path, **options)
        fleets.append(fleet)
        fleet.start(fleet_size(request.config) if workers is None else workers)
        return fleet

    yield build
    for fleet in fleets:
        fleet.close()


@pytest.fixture
def shim_fleet(shim_fleet_factory: Callable[..., Fleet]) -> Fleet:
    """A started fleet of ``--shim-workers`` workers (default 3) running the ``sim`` executor."""
    return shim_fleet_factory()


def fleet_size(config: pytest.Config) -> int:
    value = config.getoption("shim_workers") or config.getini("shim_workers")
    return int(value)
