"""A real redis-server process for tests: started on a free loopback port, killed, restarted."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from shim_core.errors import ShimError
from shim_core.local import wait_for_redis

#: Seconds a fresh redis-server gets to accept connections before the start counts as failed.
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise ShimError("no free port pair for a cluster node")  # pragma: no cover


def find_redis_server(explicit: str | None = None) -> str | None:
    """The redis-server binary: ``explicit`` if given, else the one on PATH, else None."""
    return explicit or shutil.which("redis-server")


class RedisServer:
    """One redis-server process with its own data directory.

    ``appendonly=True`` makes it durable (``appendfsync always``), so :meth:`kill` followed by
    :meth:`start` loses nothing: that is how tests prove a Redis crash loses no task.

    ``args`` go to redis-server after SHIM's own (a later directive wins: ``["--port", "0",
    "--tls-port", str(port)]`` makes a TLS-only server); ``ping_options`` are the redis-py client
    keywords that reach it once it runs (TLS files, a password), to tell when it is ready.
    """

    def __init__(
        self,
        binary: str,
        *,
        port: int | None = None,
        appendonly: bool = False,
        directory: str | Path | None = None,
        args: Sequence[str] = (),
        ping_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.appendonly = appendonly
        self.args = list(args)
        self.ping_options = dict(ping_options or {})
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="shim-redis-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            # A replica (Sentinel, Cluster) syncs at once, not after the default 5 s pause in
            # which a diskless sync waits for more replicas to join.
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        args += self.args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_redis(
                self.process,
                redis.Redis(port=self.port, socket_connect_timeout=0.5, **self.ping_options),
                START_TIMEOUT,
            )
        except ShimError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        return next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), "?")

    def _end(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None


class SentinelServer:
    """A redis-server in Sentinel mode on a free loopback port, watching one master as
    ``service``; quick to decide (the master is down after ``down_after_ms``)."""

    def __init__(
        self,
        binary: str,
        master_port: int,
        *,
        service: str = "shim",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.master_port = master_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._tmp = tempfile.TemporaryDirectory(prefix="shim-sentinel-")
        self.directory = Path(self._tmp.name)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelServer:
        config = self.directory / "sentinel.conf"  # Sentinel rewrites its own configuration
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [self.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_for_redis(self.process, client, START_TIMEOUT)
            self._quicken(client)
        except ShimError:
            self.close()
            raise
        finally:
            client.close()
        return self

    @staticmethod
    def _quicken(client: redis.Redis) -> None:
        """Sentinel's own periods, shortened where the server allows it (``SENTINEL DEBUG``,
        Redis 7): an old master is demoted four publish periods after it is seen (8 s by
        default), so a test that fails over twice would spend most of its time waiting. The
        publish period stays at 0.5 s: shorter, a sentinel could undo a promotion before the
        hello messages told it of the new configuration. A sentinel that was not scheduled for
        2 s (a loaded test machine) enters TILT mode and does nothing for 30 s by default: 1 s
        here. Older servers keep their defaults."""
        with contextlib.suppress(redis.ResponseError):
            client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "DEBUG", "info-period", 100, "publish-period", 500,
                "ping-period", 100, "tilt-period", 1000,
            )  # fmt: skip

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        self._tmp.cleanup()


def sentinel_url(sentinels: Sequence[SentinelServer], db: int = 0) -> str:
    """The ``redis+sentinel://`` URL of a group of sentinels watching one service."""
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    return f"redis+sentinel://{hosts}/{sentinels[0].service}/{db}"


class RedisClusterGroup:
    """A Redis Cluster of ``masters`` masters with one replica each, on loopback ports, built
    with ``redis-cli --cluster create`` (``url``: the ``redis+cluster://`` URL)."""

    def __init__(self, binary: str, *, masters: int = 3) -> None:
        self.binary = binary
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "2000"]
        self.servers = [
            RedisServer(binary, port=free_cluster_port(), args=args) for _ in range(masters * 2)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])
        return f"redis+cluster://{hosts}"

    def start(self) -> RedisClusterGroup:
        for server in self.servers:
            server.start()
        cli = shutil.which("redis-cli") or str(Path(self.binary).with_name("redis-cli"))
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT * 3
        while not all(self._ready(s.port) for s in self.servers):
            if time.monotonic() > deadline:
                raise ShimError("the Redis Cluster did not become ready")
            time.sleep(0.1)
        return self

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        client = redis.Redis(port=self.servers[0].port, decode_responses=True)
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))  # type: ignore[no-untyped-call]
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
                if int(start) <= slot <= int(end):
                    return int(master[1])
        finally:
            client.close()
        raise ShimError(f"no master serves the slot of {key!r}")  # pragma: no cover

    def failover(self, key: str, timeout: float = 30.0) -> int:
        """``CLUSTER FAILOVER`` on the replica of ``key``'s master; waits until the replica is
        the master of that slot and returns its port."""
        old = self.master_of(key)
        ports = [s.port for s in self.servers]
        replica = next(p for p in ports if replication_info(p).get("master_port") == old)
        client = redis.Redis(port=replica)
        try:
            client.execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while self.master_of(key) != replica or not all(self._ready(s.port) for s in self.servers):
            if time.monotonic() > deadline:
                raise ShimError(f"no failover of the master on port {old} within {timeout} s")
            time.sleep(0.05)
        return replica

    def close(self) -> None:
        for server in self.servers:
            server.close()

    @staticmethod
    def _ready(port: int) -> bool:
        """The node sees the cluster as ok, and a replica is in sync with its master."""
        client = redis.Redis(port=port, decode_responses=True)
        try:
            info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            replication = client.info("replication")
        except redis.RedisError:
            return False
        finally:
            client.close()
        in_sync = replication.get("role") == "master" or (
            replication.get("master_link_status") == "up"
        )
        return "cluster_state:ok" in str(info) and in_sync


def replication_info(port: int) -> dict[str, Any]:
    """``INFO replication`` of the server on ``port``."""
    client = redis.Redis(port=port, decode_responses=True)
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def replica_in_sync(port: int) -> bool:
    """Whether the server on ``port`` is a replica in sync with its master."""
    info = replication_info(port)
    return info.get("role") == "slave" and info.get("master_link_status") == "up"
