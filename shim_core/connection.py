"""RedisConnectionManager: one Redis client per process, from a URL, with retries and health checks.

Supported URLs:

* ``redis://[[user]:password@]host[:port][/db][?param=value&...]`` and ``rediss://...`` (TLS)
* ``unix://[[user]:password@]/path/to/redis.sock[?db=N&...]``
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``
* ``embedded://[name]`` — no server: an in-process fakeredis (with Lua) shared by every manager of
  the same name in this process. The default, so SHIM runs on a laptop with nothing installed.

A password may hold any character, '#', '/', '?' and '@' included: the URL is split at its last
'@'. Percent-escapes (``%23``) are decoded; a '%' of the password itself is written ``%25``.
Query parameters (:data:`URL_PARAMETERS`) are checked: an unknown one is a ConfigError naming it.
TLS files come from the URL (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``) or from
:class:`TLSOptions` (``SHIM_TLS_CA``, ``SHIM_TLS_CERT``, ``SHIM_TLS_KEY``); the URL wins.

Failures name their cause and come at once: a wrong or missing password (AuthenticationFailed),
a certificate that does not verify, a server wanting a client certificate, TLS spoken to a plain
port or plain TCP to a TLS port (TLSFailed) are never retried. Retries with backoff are for a
server that went away, not for one that said no.

Passwords never appear in a repr, log line or error: :func:`mask_url` hides them.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

import attrs
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from shim_core.config import Settings, parse_bool
from shim_core.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    InsecureTLSWarning,
    PermissionDenied,
    ShimError,
    TLSFailed,
)
from shim_core.redact import SECRET_PARAMETERS, mask_url

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Retries of one command on a dropped connection: with 50 ms..2 s backoff this rides out a
#: Redis restart of a few seconds without surfacing an error.
DEFAULT_RETRIES = 8
#: Seconds to wait for a TCP connection (and a TLS handshake) before counting an attempt as failed.
DEFAULT_CONNECT_TIMEOUT = 2.0
#: A connection idle this long is pinged before reuse, catching half-open sockets.
DEFAULT_HEALTH_CHECK_INTERVAL = 15

_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "redis+cluster",
    "rediss+cluster",
    "embedded",
)
#: The schemes that speak TLS.
_TLS_SCHEMES = ("rediss", "rediss+cluster")
_embedded_servers: dict[str, Any] = {}
_embedded_lock = threading.Lock()


def _cert_reqs(raw: str) -> str:
    if raw.lower() not in ("required", "optional", "none"):
        raise ValueError(raw)
    return raw.lower()


#: Query parameters every URL scheme but ``embedded://`` accepts, with their parsers.
URL_PARAMETERS: dict[str, Callable[[str], Any]] = {
    "db": int,
    "username": str,
    "password": str,
    "client_name": str,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "health_check_interval": int,
}
#: Query parameters of ``redis+sentinel://`` URLs only: the sentinels' own credentials, when
#: they differ from the master's (``sentinel_password`` is masked like a password).
SENTINEL_URL_PARAMETERS: dict[str, Callable[[str], Any]] = {
    "sentinel_username": str,
    "sentinel_password": str,
}
#: Query parameters of ``rediss://`` URLs only (TLS).
TLS_URL_PARAMETERS: dict[str, Callable[[str], Any]] = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": parse_bool,
}


@attrs.frozen
class TLSOptions:
    """TLS files and the one way to skip verification, for ``rediss://`` URLs.

    Parameters of the URL (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``) win over these."""

    #: PEM file of the CA that signed the server's certificate ("": the system's CAs).
    ca: str = ""
    #: PEM file of the client certificate, for a server that asks for one.
    cert: str = ""
    #: PEM file of the client certificate's key ("": in the certificate file).
    key: str = ""
    #: Do not verify the server's certificate (a warning each time it is used).
    insecure: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TLSOptions:
        """The TLS options of ``settings`` (``SHIM_TLS_CA``, ``SHIM_TLS_CERT``,
        ``SHIM_TLS_KEY``, ``SHIM_TLS_INSECURE``)."""
        return cls(settings.tls_ca, settings.tls_cert, settings.tls_key, settings.tls_insecure)

    def given(self) -> list[str]:
        """The names of the settings that are set (``SHIM_TLS_CA``, ...)."""
        pairs = (("CA", self.ca), ("CERT", self.cert), ("KEY", self.key))
        names = [f"SHIM_TLS_{name}" for name, value in pairs if value]
        return [*names, "SHIM_TLS_INSECURE"] if self.insecure else names


@attrs.frozen
class RedisURL:
    """A Redis URL taken apart (:func:`parse_redis_url`); ``options`` are client keywords."""

    scheme: str
    #: (host, port) pairs: one for redis:// and rediss://, several for Sentinel, none otherwise.
    hosts: tuple[tuple[str, int], ...]
    #: The socket path (unix://), service name (Sentinel) or embedded server name.
    path: str
    #: username, password, db and the query parameters, as redis-py keywords.
    options: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def has_password(self) -> bool:
        return bool(self.options.get("password"))


def parse_redis_url(url: str) -> RedisURL:
    """Take ``url`` apart; raise ConfigError (with the password masked) when it is not a valid
    SHIM Redis URL, naming the part that is wrong."""
    masked = mask_url(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported Redis URL {masked!r}: expected one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    if scheme == "embedded":
        return RedisURL(scheme, (), rest.strip("/"), {})
    userinfo, _at, location = rest.rpartition("@")
    location, _question, query = location.partition("?")
    options = _parse_query(query, scheme, masked)
    user, _colon, password = userinfo.partition(":")
    for name, value in (("username", unquote(user)), ("password", unquote(password))):
        if value and name in options:
            raise ConfigError(f"Redis URL {masked!r} gives the {name} twice (also as ?{name}=)")
        if value:
            options[name] = value
    if scheme == "unix":
        if not location.strip("/"):
            raise ConfigError(f"invalid Redis URL {masked!r}: no socket path")
        return RedisURL(scheme, (), unquote(location), options)
    hostlist, _slash, path = location.partition("/")
    segments = [unquote(s) for s in path.split("/") if s]
    if scheme == "redis+sentinel":
        return _sentinel_url(hostlist, segments, options, masked)
    if scheme.endswith("+cluster"):
        if segments not in ([], ["0"]):
            raise ConfigError(f"invalid Redis URL {masked!r}: Redis Cluster has database 0 only")
        hosts = tuple(_host_port(h, 6379, masked) for h in hostlist.split(",") if h)
        if not hosts:
            raise ConfigError(
                f"invalid Redis URL {masked!r}: expected {scheme}://host:port[,host:port...]"
            )
        return RedisURL(scheme, hosts, "", options)
    if len(segments) > 1:
        raise ConfigError(f"invalid Redis URL {masked!r}: the path is the database number only")
    if segments:
        _set_db(options, segments[0], masked)
    return RedisURL(scheme, (_host_port(hostlist or "localhost", 6379, masked),), "", options)


def _sentinel_url(
    hostlist: str, segments: list[str], options: dict[str, Any], masked: str
) -> RedisURL:
    if not hostlist or not segments or len(segments) > 2:
        raise ConfigError(
            f"invalid Sentinel URL {masked!r}: "
            "expected redis+sentinel://host:port[,host:port]/service_name[/db]"
        )
    if len(segments) > 1:
        _set_db(options, segments[1], masked)
    hosts = tuple(_host_port(h, 26379, masked) for h in hostlist.split(","))
    return RedisURL("redis+sentinel", hosts, segments[0], options)


def _set_db(options: dict[str, Any], raw: str, masked: str) -> None:
    try:
        db = int(raw)
    except ValueError:
        raise ConfigError(f"invalid Redis URL {masked!r}: the database must be a number") from None
    if options.setdefault("db", db) != db:
        raise ConfigError(f"Redis URL {masked!r} gives two databases (path and ?db=)")


def _host_port(text: str, default_port: int, masked: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"invalid Redis URL {masked!r}: unclosed '[' around an IPv6 host")
        port = after[1:]
    else:
        host, _colon, port = text.partition(":")
    if not port:
        return unquote(host), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"invalid Redis URL {masked!r}: the port must be a number, 1-65535")
    return unquote(host), int(port)


def _parse_query(query: str, scheme: str, masked: str) -> dict[str, Any]:
    accepted = dict(URL_PARAMETERS)
    if scheme in _TLS_SCHEMES:
        accepted.update(TLS_URL_PARAMETERS)
    if scheme == "redis+sentinel":
        accepted.update(SENTINEL_URL_PARAMETERS)
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        raw_name, _eq, raw_value = item.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if name in TLS_URL_PARAMETERS and scheme not in _TLS_SCHEMES:
            raise ConfigError(
                f"Redis URL parameter {name!r} is for TLS: it needs a rediss:// URL, not {masked!r}"
            )
        if name not in accepted:
            raise ConfigError(
                f"unknown Redis URL parameter {name!r} in {masked!r}: {scheme}:// URLs accept "
                + ", ".join(sorted(accepted))
            )
        if name in options:
            raise ConfigError(f"Redis URL parameter {name!r} is given twice in {masked!r}")
        if not value:
            raise ConfigError(f"Redis URL parameter {name!r} has no value in {masked!r}")
        try:
            options[name] = accepted[name](value)
        except ValueError:
            shown = "" if name in SECRET_PARAMETERS else f" {value!r}"
            raise ConfigError(
                f"Redis URL parameter {name!r} has an invalid value{shown} in {masked!r}"
            ) from None
    return options


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


class RefusedConnection(redis.ConnectionError):
    """The server (or the TLS layer) said no while a connection was being set up: never retried.

    ``kind`` is one of ``auth``, ``refused``, ``tls-verify``, ``tls-handshake``,
    ``tls-client-cert``, ``not-tls`` and ``plain-to-tls``; :func:`describe_error` turns it into
    a SHIM error whose message names the cause."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def is_refusal(error: BaseException) -> bool:
    """True for an error that a retry cannot cure: the server refused the credentials, the
    TLS layer failed, or the server spoke another protocol."""
    return isinstance(
        error, RefusedConnection | redis.AuthenticationError | redis.exceptions.AuthorizationError
    )


class RefusalAwareRetry(Retry):
    """redis-py's Retry, except that a refusal (:func:`is_refusal`) is raised at once."""

    def call_with_retry(
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        """Call ``do`` until it succeeds, the retries run out or it raises a refusal."""
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_refusal(error) or (is_retryable is not None and not is_retryable(error)):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if 0 <= self._retries < failures:
                    raise
                backoff = self._backoff.compute(failures)
                if backoff > 0:
                    time.sleep(backoff)


def _handshake_refusal(exc: ssl.SSLError) -> RefusedConnection:
    reason = str(getattr(exc, "reason", None) or exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RefusedConnection("tls-verify", str(getattr(exc, "verify_message", "") or reason))
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
        return RefusedConnection("tls-client-cert", reason)
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return RefusedConnection("not-tls", reason)
    return RefusedConnection("tls-handshake", reason)


def _first_command_refusal(
    exc: redis.RedisError, tls: bool, answered_before: bool = False
) -> RefusedConnection | None:
    """What an error on a fresh connection's first commands (HELLO, AUTH, SELECT) means.

    A server that closes the connection at once is taken for a port of the other protocol
    (TLS or plain), unless it ``answered_before`` on this manager: then it is a server going
    down or coming back (a restart), and worth a retry like any dropped connection."""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return RefusedConnection("auth", str(exc))
    if isinstance(exc, redis.exceptions.BusyLoadingError | redis.TimeoutError):
        return None  # a restarted server loading its data, or a slow one: worth a retry
    if isinstance(exc, redis.ResponseError):
        return RefusedConnection("refused", str(exc))
    if not isinstance(exc, redis.ConnectionError) or "max number of clients" in str(exc):
        return None
    if answered_before:
        return None
    cause = exc.__context__
    if tls and isinstance(cause, ssl.SSLError):  # closed right after the handshake
        return RefusedConnection("tls-client-cert", str(getattr(cause, "reason", None) or cause))
    if not tls and isinstance(cause, ConnectionResetError | BrokenPipeError):
        return RefusedConnection("plain-to-tls", str(exc))
    return None


def _connection_class(base: type, manager: RedisConnectionManager) -> type:
    """``base`` (a redis-py connection class) that counts its connections for the manager and
    turns a refusal while connecting into :class:`RefusedConnection`."""
    tls = issubclass(base, redis.SSLConnection)

    class ShimConnection(base):  # type: ignore[misc]
        def _connect(self) -> Any:
            try:
                sock = super()._connect()
            except ssl.SSLError as exc:
                raise _handshake_refusal(exc) from exc
            manager._connects += 1
            return sock

        def _wrap_socket_with_ssl(self, sock: Any) -> Any:
            sock.settimeout(self.socket_connect_timeout)  # the handshake is part of connecting
            try:
                wrapped = super()._wrap_socket_with_ssl(sock)
            except TimeoutError as exc:
                raise RefusedConnection("not-tls", f"no TLS handshake: {exc}") from exc
            wrapped.settimeout(self.socket_timeout)
            return wrapped

        def on_connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
            try:
                answer = super().on_connect_check_health(*args, **kwargs)
            except RefusedConnection:
                raise
            except redis.RedisError as exc:
                refusal = _first_command_refusal(exc, tls, manager._answered)
                if refusal is None:
                    raise
                raise refusal from exc
            manager._answered = True
            return answer

    return ShimConnection


def describe_error(exc: BaseException, url: str, tls: TLSOptions | None = None) -> ShimError:
    """The SHIM error for a redis-py (or socket) error met on ``url``: its class and message
    name the cause; the URL in it has its password masked."""
    if isinstance(exc, ShimError):
        return exc
    masked = mask_url(url)
    if isinstance(exc, RefusedConnection):
        return _refusal_error(exc, url, tls or TLSOptions())
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return _refusal_error(RefusedConnection("auth", str(exc)), url, tls or TLSOptions())
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return PermissionDenied(f"the Redis user of {masked} lacks a permission: {exc}", [str(exc)])
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return ConnectionFailed(f"cannot reach Redis at {masked}: {mask_url(str(exc))}")
    return ShimError(f"Redis refused a command: {mask_url(str(exc))}")


def _refusal_error(exc: RefusedConnection, url: str, tls: TLSOptions) -> ShimError:
    masked = mask_url(url)
    try:
        parsed: RedisURL | None = parse_redis_url(url)
    except ConfigError:
        parsed = None
    user = (parsed.options.get("username") if parsed else None) or "default"
    has_cert = bool(tls.cert or (parsed and parsed.options.get("ssl_certfile")))
    if exc.kind == "auth":
        if parsed is not None and not parsed.has_password:
            return AuthenticationFailed(
                f"Redis at {masked} needs a password and the URL gives none (the default user "
                "is off or has a password): use redis://USER:PASSWORD@host:port/db "
                f"({exc.detail})"
            )
        return AuthenticationFailed(
            f"wrong password for user {user!r} of Redis at {masked} (or the user is disabled or "
            f"unknown): {exc.detail}"
        )
    messages = {
        "refused": f"Redis at {masked} refused the connection: {exc.detail}",
        "tls-verify": f"the TLS certificate of Redis at {masked} failed verification "
        f"({exc.detail}): is SHIM_TLS_CA (or ssl_ca_certs) the CA that signed it?",
        "tls-handshake": f"the TLS handshake with Redis at {masked} failed: {exc.detail}",
        "tls-client-cert": f"Redis at {masked} closed the TLS connection at its start: "
        + (
            f"it did not accept the client certificate ({exc.detail})"
            if has_cert
            else "it requires a client certificate: set SHIM_TLS_CERT and SHIM_TLS_KEY (or "
            f"ssl_certfile and ssl_keyfile) ({exc.detail})"
        ),
        "not-tls": f"Redis at {masked} does not answer in TLS: is the port a plain (non-TLS) "
        f"one? Use redis:// for it ({exc.detail})",
        "plain-to-tls": f"Redis at {masked} closed the connection at the first command: if the "
        f"port is a TLS one, use rediss:// ({exc.detail})",
    }
    error = ConnectionFailed if exc.kind == "refused" else TLSFailed
    return error(messages[exc.kind])


class SentinelWatch:
    """Follows ``+switch-master`` on every sentinel of a URL, one listener thread each, and
    calls ``on_switch("host port")`` when the master of ``service`` changes (once per sentinel
    that announces it). A sentinel that is down is retried every second."""

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        service: str,
        credentials: Mapping[str, Any],
        on_switch: Callable[[str], None],
    ) -> None:
        self.service = service
        self._credentials = dict(credentials)
        self._on_switch = on_switch
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._listen, args=(host, port), daemon=True, name=f"shim-sentinel-{port}"
            )
            for host, port in hosts
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)

    def _listen(self, host: str, port: int) -> None:
        while not self._stop.is_set():
            client = redis.Redis(
                host=host, port=port, socket_connect_timeout=1.0, **self._credentials
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe("+switch-master")
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._switched(message.get("data"))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._stop.wait(1.0)  # a sentinel that is down or restarting
            except redis.RedisError as exc:  # refused (ACL, auth): say so, retry slowly
                log.warning("Sentinel %s:%d refused the +switch-master watch: %s", host, port, exc)
                self._stop.wait(30.0)
            finally:
                pubsub.close()
                client.close()

    def _switched(self, data: Any) -> None:
        # "<service> <old host> <old port> <new host> <new port>"
        words = (data.decode() if isinstance(data, bytes) else str(data)).split()
        if len(words) == 5 and words[0] == self.service:
            self._on_switch(f"{words[3]}:{words[4]}")


class RedisConnectionManager:
    """Owns the Redis client of a process (seed component 1).

    The client is thread-safe (a connection pool); every command retries with exponential backoff
    on connection errors, so a Redis restart is survived transparently. A refusal (wrong
    password, TLS failure, wrong protocol) is raised at once instead.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = DEFAULT_RETRIES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        health_check_interval: int = DEFAULT_HEALTH_CHECK_INTERVAL,
        tls: TLSOptions | None = None,
        sentinel_password: str = "",
    ) -> None:
        self._parsed = parse_redis_url(url)
        self._tls = tls or TLSOptions()
        self._tls_options = _tls_options(self._parsed, self._tls, url)
        self.url = url
        self._retries = retries
        self._connect_timeout = connect_timeout
        self._health_check_interval = health_check_interval
        self._client: redis.Redis | None = None
        self._connects = 0
        #: A connection of this manager got through its first commands: a connection closed at
        #: once after that is a restart, not a port of the other protocol.
        self._answered = False
        self._ping_failures = 0
        self._last_ping_ms: float | None = None
        self._connect_time_ms: float | None = None
        self._last_error: str | None = None
        self._last_exception: BaseException | None = None
        self._sentinel_password = sentinel_password
        #: Pools of this manager's Sentinel clients, and the thread that follows the sentinels.
        self._sentinel_pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._watch: SentinelWatch | None = None
        #: Master switches announced by the sentinels since this manager was made, and when the
        #: last one was (``time.monotonic()``; None: never).
        self.failovers = 0
        self.switched_at: float | None = None
        self._master_address = ""
        self._switch_lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, **options: Any) -> RedisConnectionManager:
        """The manager of ``settings``: its URL and its TLS settings (``options``: the other
        keywords of the constructor)."""
        return cls(
            settings.redis_url,
            tls=TLSOptions.from_settings(settings),
            sentinel_password=settings.sentinel_password,
            **options,
        )

    def __repr__(self) -> str:
        return f"RedisConnectionManager({mask_url(self.url)!r}, connected={self.is_connected()})"

    @property
    def is_embedded(self) -> bool:
        return self._parsed.scheme == "embedded"

    @property
    def username(self) -> str:
        """The Redis user of the URL (``default`` when it names none)."""
        return str(self._parsed.options.get("username") or "default")

    def connect(self) -> redis.Redis:
        """Create the client and check that the server answers; else raise ConnectionFailed
        (AuthenticationFailed, TLSFailed: the cause named) or PermissionDenied."""
        if self._client is None:
            self._client = self._build_client()
        start = time.perf_counter()
        try:
            answered = self.ping()
        except redis.RedisError as exc:  # PING itself refused (an ACL without +ping)
            answered, self._last_exception = False, exc
        if not answered:
            client, self._client = self._client, None
            client.close()
            raise self.describe(self._last_exception or ConnectionError("no answer"))
        self._connect_time_ms = (time.perf_counter() - start) * 1000
        return self._client

    def describe(self, exc: BaseException) -> ShimError:
        """The SHIM error for ``exc``, met on this manager's URL (:func:`describe_error`)."""
        return describe_error(exc, self.url, self._tls)

    def disconnect(self) -> None:
        """Close every pooled connection; the manager may connect again later."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        client, self._client = self._client, None
        if client is not None:
            client.close()
            pool = getattr(client, "connection_pool", None)  # a cluster client has one per node
            if pool is not None:
                pool.disconnect()

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
            self._last_exception = exc
            self._last_error = str(self.describe(exc))
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
        parsed = self._parsed
        if parsed.scheme == "embedded":
            import fakeredis

            return fakeredis.FakeRedis(server=embedded_server(parsed.path), decode_responses=True)
        options: dict[str, Any] = {
            "decode_responses": True,
            "retry": RefusalAwareRetry(
                ExponentialWithJitterBackoff(cap=2.0, base=0.05), self._retries
            ),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError, ConnectionResetError],
            "socket_connect_timeout": self._connect_timeout,
            "health_check_interval": self._health_check_interval,
            **_driver_info(),
            **parsed.options,
            **self._tls_options,
        }
        if parsed.scheme.endswith("+cluster"):
            cluster: redis.Redis = self._cluster_client(options)  # the same commands
            return cluster
        if parsed.scheme == "redis+sentinel":
            client = self._sentinel_client(options)
        else:
            connection_class: type = redis.Connection
            if parsed.scheme == "unix":
                connection_class = redis.UnixDomainSocketConnection
                options["path"] = parsed.path
            else:  # a unix socket connection takes no keepalive
                options.setdefault("socket_keepalive", True)
                options["host"], options["port"] = parsed.hosts[0]
                if parsed.scheme == "rediss":
                    connection_class = redis.SSLConnection
            pool = redis.ConnectionPool(connection_class=connection_class, **options)
            client = redis.Redis(connection_pool=pool)
            client.auto_close_connection_pool = True
        client.connection_pool.connection_class = _connection_class(
            client.connection_pool.connection_class, self
        )
        return client

    def _cluster_client(self, options: dict[str, Any]) -> Any:
        """A Redis Cluster client: it follows MOVED / ASK and the cluster's failovers itself.
        SHIM keeps each namespace in one hash slot (``shim:{ns}:...``), so every script runs on
        one node, and namespaces spread over the shards."""
        from redis.cluster import ClusterNode, RedisCluster

        options.pop("retry_on_error", None)  # the cluster client retries by itself
        options.pop("health_check_interval", None)
        options.pop("db", None)
        if self._parsed.scheme == "rediss+cluster":
            options["ssl"] = True
        nodes = [ClusterNode(host, port) for host, port in self._parsed.hosts]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **options)

    def _sentinel_client(self, options: dict[str, Any]) -> redis.Redis:
        credentials = {
            name.removeprefix("sentinel_"): options.pop(name)
            for name in SENTINEL_URL_PARAMETERS
            if name in options
        }
        if "password" not in credentials and self._sentinel_password:
            credentials["password"] = self._sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self._parsed.hosts),
            socket_timeout=self._connect_timeout,
            sentinel_kwargs={**credentials, "socket_timeout": self._connect_timeout},
        )
        client: redis.Redis = sentinel.master_for(self._parsed.path, **options)  # type: ignore[no-untyped-call]
        self._sentinel_pools.add(client.connection_pool)
        if self._watch is None:
            self._watch = SentinelWatch(
                self._parsed.hosts, self._parsed.path, credentials, self._master_switched
            )
        return client

    def _master_switched(self, address: str) -> None:
        """The sentinels elected a new master: drop every connection to the old one at once,
        in use or idle, so that no write goes to a master that is being demoted (its writes
        would be thrown away when it resyncs); each reconnects to the new master. Every
        sentinel announces the switch: only the first announcement of an address acts."""
        with self._switch_lock:
            if address == self._master_address:
                return
            self._master_address = address
            self.failovers += 1
            self.switched_at = time.monotonic()
        log.warning(
            "Sentinel: the master of %r is now %s; reconnecting", self._parsed.path, address
        )
        for pool in list(self._sentinel_pools):
            pool.disconnect(inuse_connections=True)


def _driver_info() -> dict[str, Any]:
    """What a connection tells the server about its client library (``CLIENT SETINFO``): the
    version redis-py states itself. Without it, redis-py 7.1+ looks its version up in the
    installed packages' metadata for every connection it opens (milliseconds each, a few of them
    before a worker is ready). Older versions take no ``driver_info`` and look it up once."""
    driver_info = getattr(redis, "DriverInfo", None)
    if driver_info is None:
        return {}
    return {"driver_info": driver_info(lib_version=redis.__version__)}


def _tls_options(parsed: RedisURL, tls: TLSOptions, url: str) -> dict[str, Any]:
    """The ssl_* client keywords of ``parsed`` and ``tls`` (the URL's win); ConfigError when TLS
    settings meet a non-TLS URL, a TLS file is missing, or verification is turned off without
    ``tls.insecure``."""
    masked = mask_url(url)
    if parsed.scheme not in _TLS_SCHEMES:
        if tls.given():
            raise ConfigError(
                f"{', '.join(tls.given())} set, but {masked!r} is not a TLS URL: use rediss://"
            )
        return {}
    options = {
        "ssl_ca_certs": parsed.options.get("ssl_ca_certs", tls.ca) or None,
        "ssl_certfile": parsed.options.get("ssl_certfile", tls.cert) or None,
        "ssl_keyfile": parsed.options.get("ssl_keyfile", tls.key) or None,
    }
    for name, path in options.items():
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"TLS file {path!r} ({name}) does not exist or is not a file")
    if options["ssl_keyfile"] and not options["ssl_certfile"]:
        raise ConfigError("a TLS client key (SHIM_TLS_KEY, ssl_keyfile) needs its certificate")
    reqs = parsed.options.get("ssl_cert_reqs", "none" if tls.insecure else "required")
    if reqs == "none":
        if not tls.insecure:
            raise ConfigError(
                f"{masked!r} turns off the verification of the server's certificate "
                "(ssl_cert_reqs=none): set SHIM_TLS_INSECURE=1 if you really mean it"
            )
        warnings.warn(
            f"TLS to {masked} does not verify the server's certificate (SHIM_TLS_INSECURE): "
            "the connection is open to a man in the middle",
            InsecureTLSWarning,
            stacklevel=3,
        )
        options["ssl_check_hostname"] = False
    options["ssl_cert_reqs"] = reqs
    return options


def redis_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Translate redis-py errors raised by ``method`` into SHIM errors with a masked URL.

    The decorated method's ``self`` may carry ``_url`` (the Redis URL) for the message.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raw_url = getattr(args[0], "_url", "") if args else ""
            if is_refusal(exc):
                raise describe_error(exc, raw_url) from exc
            url = mask_url(raw_url)
            raise ConnectionFailed(
                f"Redis at {url or 'the configured URL'} is unreachable: {exc}"
            ) from exc
        except redis.exceptions.NoPermissionError as exc:
            raise describe_error(exc, getattr(args[0], "_url", "") if args else "") from exc
        except redis.ResponseError as exc:
            raise ShimError(f"Redis refused a command: {exc}") from exc

    return wrapper
