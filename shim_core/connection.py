"""RedisConnectionManager: one Redis client per process, from a URL, with retries and health checks.

Supported URLs:

* ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS)
* ``unix:///path/to/redis.sock[?db=N]``
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``
* ``embedded://[name]`` — no server: an in-process fakeredis (with Lua) shared by every manager of
  the same name in this process. The default, so SHIM runs on a laptop with nothing installed.

Passwords never appear in a repr, log line or error: :func:`mask_url` hides them.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import attrs
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from shim_core.errors import ConfigError, ConnectionFailed, ShimError

P = ParamSpec("P")
R = TypeVar("R")

#: Retries of one command on a dropped connection: with 50 ms..2 s backoff this rides out a
#: Redis restart of a few seconds without surfacing an error.
DEFAULT_RETRIES = 8
#: Seconds to wait for a TCP connection before counting an attempt as failed.
DEFAULT_CONNECT_TIMEOUT = 2.0
#: A connection idle this long is pinged before reuse, catching half-open sockets.
DEFAULT_HEALTH_CHECK_INTERVAL = 15

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "embedded")
_embedded_servers: dict[str, Any] = {}
_embedded_lock = threading.Lock()


_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&#]*")


def mask_url(url: str) -> str:
    """``url`` with any password (in the authority or a ``password=`` query) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        # Masked on the raw text: '#', '/' or '?' inside a password would fool a URL parser.
        userinfo, _, host = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            url = f"{scheme}://{user}:***@{host}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


@attrs.frozen
class ConnectionStats:
    """A snapshot of the manager's connection health."""

    url: str  # masked
    connected: bool
    connects: int  # connections established (first connect and every reconnect)
    ping_failures: int
    last_ping_ms: float | None
    connect_time_ms: float | None
    last_error: str | None


def embedded_server(name: str = "") -> Any:
    """The process-wide fakeredis server behind ``embedded://name`` (created on first use)."""
    import fakeredis

    with _embedded_lock:
        server = _embedded_servers.get(name)
        if server is None:
            server = _embedded_servers[name] = fakeredis.FakeServer()
        return server


def forget_embedded(name: str = "") -> None:
    """Drop the embedded server ``name`` and its data."""
    with _embedded_lock:
        _embedded_servers.pop(name, None)


class RedisConnectionManager:
    """Owns the Redis client of a process (seed component 1).

    The client is thread-safe (a connection pool); every command retries with exponential backoff
    on connection errors, so a Redis restart is survived transparently.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = DEFAULT_RETRIES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        health_check_interval: int = DEFAULT_HEALTH_CHECK_INTERVAL,
    ) -> None:
        try:
            parts = urlsplit(url)
            if parts.scheme != "redis+sentinel":  # sentinel netlocs hold several host:port
                parts.port  # noqa: B018 - validates the port and IPv6 brackets
            scheme = parts.scheme
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"unsupported Redis URL {mask_url(url)!r}: expected one of "
                + ", ".join(f"{s}://" for s in _SCHEMES)
            )
        self.url = url
        self._retries = retries
        self._connect_timeout = connect_timeout
        self._health_check_interval = health_check_interval
        self._client: redis.Redis | None = None
        self._connects = 0
        self._ping_failures = 0
        self._last_ping_ms: float | None = None
        self._connect_time_ms: float | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"RedisConnectionManager({mask_url(self.url)!r}, connected={self.is_connected()})"

    @property
    def is_embedded(self) -> bool:
        return self.url.startswith("embedded:")

    def connect(self) -> redis.Redis:
        """Create the client and check that the server answers; else raise ConnectionFailed."""
        if self._client is None:
            self._client = self._build_client()
        start = time.perf_counter()
        if not self.ping():
            client, self._client = self._client, None
            client.close()
            raise ConnectionFailed(
                f"cannot reach Redis at {mask_url(self.url)}: {self._last_error}"
            )
        self._connect_time_ms = (time.perf_counter() - start) * 1000
        return self._client

    def disconnect(self) -> None:
        """Close every pooled connection; the manager may connect again later."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    def is_connected(self) -> bool:
        return self._client is not None

    def ping(self) -> bool:
        """True when the server answers PING (latency recorded), False on a connection error."""
        client = self._client if self._client is not None else self._build_client()
        start = time.perf_counter()
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._ping_failures += 1
            self._last_error = mask_url(str(exc)) if "://" in str(exc) else str(exc)
            return False
        finally:
            if client is not self._client:
                client.close()
        self._last_ping_ms = (time.perf_counter() - start) * 1000
        return True

    def get_connection_stats(self) -> ConnectionStats:
        return ConnectionStats(
            url=mask_url(self.url),
            connected=self.is_connected(),
            connects=self._connects,
            ping_failures=self._ping_failures,
            last_ping_ms=self._last_ping_ms,
            connect_time_ms=self._connect_time_ms,
            last_error=self._last_error,
        )

    def get_client(self) -> redis.Redis:
        """The connected client (connecting on first use)."""
        return self._client if self._client is not None else self.connect()

    def new_client(self) -> redis.Redis:
        """A separate client with its own pool (for blocking reads and pub/sub)."""
        return self._build_client()

    def __enter__(self) -> RedisConnectionManager:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _build_client(self) -> redis.Redis:
        parts = urlsplit(self.url)
        if parts.scheme == "embedded":
            import fakeredis

            name = (parts.netloc + parts.path).strip("/")
            return fakeredis.FakeRedis(server=embedded_server(name), decode_responses=True)
        options: dict[str, Any] = {
            "decode_responses": True,
            "retry": Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), self._retries),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError, ConnectionResetError],
            "socket_connect_timeout": self._connect_timeout,
            "health_check_interval": self._health_check_interval,
        }
        if parts.scheme in ("redis", "rediss"):  # a unix socket connection takes no keepalive
            options["socket_keepalive"] = True
        if parts.scheme == "redis+sentinel":
            client = self._sentinel_client(parts, options)
        else:
            try:
                client = redis.Redis.from_url(self.url, **options)
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL {mask_url(self.url)!r}: {exc}") from None
        self._count_connects(client.connection_pool)
        return client

    def _sentinel_client(self, parts: Any, options: dict[str, Any]) -> redis.Redis:
        hosts = parts.netloc.rsplit("@", 1)[-1]
        path = [p for p in parts.path.split("/") if p]
        if not hosts or not path:
            raise ConfigError(
                f"invalid Sentinel URL {mask_url(self.url)!r}: "
                "expected redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        nodes = []
        try:
            for hostport in hosts.split(","):
                host, _, port = hostport.partition(":")
                nodes.append((host, int(port or 26379)))
            options["db"] = int(path[1]) if len(path) > 1 else 0
        except ValueError:
            raise ConfigError(
                f"invalid Sentinel URL {mask_url(self.url)!r}: ports and db must be numbers"
            ) from None
        if parts.password is not None:
            options["password"] = unquote(parts.password)
        if parts.username:
            options["username"] = unquote(parts.username)
        sentinel = Sentinel(nodes, socket_timeout=self._connect_timeout)  # type: ignore[no-untyped-call]
        client: redis.Redis = sentinel.master_for(path[0], **options)  # type: ignore[no-untyped-call]
        return client

    def _count_connects(self, pool: Any) -> None:
        manager = self
        base = pool.connection_class

        class CountingConnection(base):  # type: ignore[misc, valid-type]
            def _connect(self) -> Any:
                sock = super()._connect()
                manager._connects += 1
                return sock

        pool.connection_class = CountingConnection


def redis_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Translate redis-py errors raised by ``method`` into SHIM errors with a masked URL.

    The decorated method's ``self`` may carry ``_url`` (the Redis URL) for the message.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            url = mask_url(getattr(args[0], "_url", "")) if args else ""
            raise ConnectionFailed(
                f"Redis at {url or 'the configured URL'} is unreachable: {exc}"
            ) from exc
        except redis.ResponseError as exc:
            raise ShimError(f"Redis refused a command: {exc}") from exc

    return wrapper
