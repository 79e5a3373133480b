"""RedisConnectionManager (seed component 1): connect, fail, reconnect, health, shutdown, URLs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pytest_shim import RedisServer, free_port
from shim_core.cli import main
from shim_core.config import Settings
from shim_core.connection import (
    ConnectionStats,
    RedisConnectionManager,
    forget_embedded,
    redis_errors,
)
from shim_core.errors import AuthenticationFailed, ConfigError, ConnectionFailed, ShimError

PASSWORD = "s3cret-Pa55"


def unreachable_url(password: str = PASSWORD) -> str:
    """A redis:// URL with a password, on a loopback port nothing listens on."""
    return f"redis://alice:{password}@127.0.0.1:{free_port()}/0"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def embedded_name() -> Iterator[Callable[[], str]]:
    """Make fresh ``embedded://`` names, forgotten (with their data) after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"conn-test-{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        forget_embedded(name)


# ----------------------------------------------------------------- connecting
def test_connect_returns_a_working_client(shim_settings: Settings) -> None:
    """connect() returns a client that answers, and the manager reports itself connected."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    try:
        client = manager.connect()

        assert client.ping() is True
        assert manager.is_connected()
        assert manager.get_client() is client
        stats = manager.get_connection_stats()
        assert stats.connected is True
        assert stats.connect_time_ms is not None
        assert stats.connect_time_ms >= 0
        assert stats.ping_failures == 0
        assert stats.last_error is None
    finally:
        manager.disconnect()


def test_context_manager_connects_and_disconnects(shim_settings: Settings) -> None:
    """``with RedisConnectionManager(url)`` is connected inside the block and not after it."""
    with RedisConnectionManager(shim_settings.redis_url) as manager:
        assert manager.is_connected()
        assert manager.get_client().ping() is True
    assert not manager.is_connected()


def test_get_client_connects_on_first_use(shim_settings: Settings) -> None:
    """get_client() on a fresh manager connects by itself."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    assert not manager.is_connected()
    try:
        assert manager.get_client().ping() is True
        assert manager.is_connected()
    finally:
        manager.disconnect()


def test_connection_failure_raises_with_masked_password() -> None:
    """An unreachable server raises ConnectionFailed naming the URL with its password masked."""
    url = unreachable_url()
    manager = RedisConnectionManager(url, retries=0, connect_timeout=1.0)

    with pytest.raises(ConnectionFailed, match="cannot reach Redis at") as info:
        manager.connect()

    message = str(info.value)
    assert PASSWORD not in message
    assert url.replace(PASSWORD, "***") in message
    assert isinstance(info.value, ShimError)
    assert isinstance(info.value, ConnectionError)  # the builtin, for generic handlers
    assert not manager.is_connected()
    stats = manager.get_connection_stats()
    assert stats.connected is False
    assert stats.ping_failures == 1
    assert stats.last_error
    assert PASSWORD not in stats.last_error


def test_connection_failure_with_a_retry_still_fails_fast() -> None:
    """With retries=1 a refused connection is retried once, then raises ConnectionFailed."""
    manager = RedisConnectionManager(unreachable_url(), retries=1, connect_timeout=1.0)
    start = time.monotonic()

    with pytest.raises(ConnectionFailed):
        manager.get_client()

    assert time.monotonic() - start < 5.0
    assert not manager.is_connected()


# --------------------------------------------------------------- reconnecting
def test_disconnect_then_get_client_works_again(shim_settings: Settings) -> None:
    """After disconnect() the manager connects again on the next get_client(); data is intact."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    key = f"shim:{{{shim_settings.namespace}}}:conn-test"
    try:
        manager.get_client().set(key, "kept")
        manager.disconnect()
        assert not manager.is_connected()

        client = manager.get_client()

        assert manager.is_connected()
        assert client.get(key) == "kept"
    finally:
        manager.get_client().delete(key)
        manager.disconnect()


def test_disconnect_is_idempotent(shim_settings: Settings) -> None:
    """disconnect() on a never-connected or already-disconnected manager does nothing."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    manager.disconnect()
    manager.connect()
    manager.disconnect()
    manager.disconnect()
    assert not manager.is_connected()


@pytest.mark.shim_real_redis
def test_command_survives_a_server_restart(
    shim_redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A command issued after the server is killed and restarted on its port succeeds (retried)."""
    server = shim_redis_server_factory()
    manager = RedisConnectionManager(server.url)
    try:
        client = manager.connect()
        assert client.incr("counter") == 1

        server.kill()
        server.start()  # same port, empty data (no persistence)

        assert client.incr("counter") == 1
        assert manager.ping() is True
        assert manager.is_connected()
    finally:
        manager.disconnect()


@pytest.mark.shim_real_redis
def test_command_issued_while_the_server_is_down_waits_for_it(
    shim_redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A command sent while Redis is down is retried with backoff until the server is back."""
    server = shim_redis_server_factory()
    manager = RedisConnectionManager(server.url)
    try:
        client = manager.connect()
        client.set("before", "1")
        server.kill()
        restarter = threading.Timer(0.2, server.start)
        start = time.monotonic()
        restarter.start()
        try:
            assert client.incr("counter") == 1  # refused at first, retried until the restart
        finally:
            restarter.join()
        assert time.monotonic() - start >= 0.2
        assert client.get("before") is None  # it really is a fresh server
    finally:
        manager.disconnect()


# --------------------------------------------------------------------- health
def test_ping_records_latency(shim_settings: Settings) -> None:
    """ping() returns True and records the round trip in last_ping_ms."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    try:
        manager.connect()

        assert manager.ping() is True

        stats = manager.get_connection_stats()
        assert isinstance(stats, ConnectionStats)
        assert stats.last_ping_ms is not None
        assert 0 <= stats.last_ping_ms < 5_000
        assert stats.url == shim_settings.redis_url  # no password to mask here
    finally:
        manager.disconnect()


def test_ping_without_connect_leaves_the_manager_disconnected(shim_settings: Settings) -> None:
    """A health-check ping on an unconnected manager uses a throwaway client and keeps no pool."""
    manager = RedisConnectionManager(shim_settings.redis_url)

    assert manager.ping() is True

    assert not manager.is_connected()
    assert manager.get_connection_stats().last_ping_ms is not None


def test_ping_reports_failure_instead_of_raising() -> None:
    """ping() on an unreachable server returns False and counts the failure."""
    manager = RedisConnectionManager(unreachable_url(), retries=0, connect_timeout=1.0)

    assert manager.ping() is False
    assert manager.ping() is False

    stats = manager.get_connection_stats()
    assert stats.ping_failures == 2
    assert stats.last_ping_ms is None
    assert stats.last_error is not None
    assert PASSWORD not in stats.last_error
    assert PASSWORD not in stats.url


@pytest.mark.shim_real_redis
def test_stats_count_connections_on_a_real_server(shim_settings: Settings) -> None:
    """connects counts every connection established, so it is above zero once connected."""
    manager = RedisConnectionManager(shim_settings.redis_url)
    try:
        manager.connect()
        assert manager.get_connection_stats().connects > 0
    finally:
        manager.disconnect()


# ------------------------------------------------------------------- shutdown
@pytest.mark.shim_real_redis
def test_disconnect_closes_the_pooled_connections(shim_settings: Settings) -> None:
    """After disconnect() the server no longer lists the manager's connections."""
    name = f"shim-conn-{uuid.uuid4().hex[:8]}"
    manager = RedisConnectionManager(f"{shim_settings.redis_url}?client_name={name}")
    observer = redis.Redis.from_url(shim_settings.redis_url, decode_responses=True)
    try:
        manager.connect()

        def open_connections() -> int:
            return sum(1 for c in observer.client_list() if c.get("name") == name)

        assert open_connections() == 1

        manager.disconnect()

        assert not manager.is_connected()
        assert not manager.get_connection_stats().connected
        assert wait_for(lambda: open_connections() == 0), "pooled connection still open"
    finally:
        manager.disconnect()
        observer.close()


# ----------------------------------------------------------------------- URLs
@pytest.mark.parametrize(
    "url", ["http://alice:s3cret-Pa55@h:6379", "localhost:6379", "mongodb://h/0", "/tmp/r.sock"]
)
def test_unsupported_scheme_is_config_error(url: str) -> None:
    """A URL whose scheme is not a Redis one is refused at construction, password masked."""
    with pytest.raises(ConfigError, match="unsupported Redis URL") as info:
        RedisConnectionManager(url)
    assert PASSWORD not in str(info.value)
    assert "redis://" in str(info.value)  # lists what is supported


@pytest.mark.parametrize(
    "url", ["redis://:s3cret-Pa55@127.0.0.1:notaport/0", "rediss://:s3cret-Pa55@h:99999"]
)
def test_malformed_redis_url_is_config_error(url: str) -> None:
    """A redis:// URL with a bad port is ConfigError (password masked) as soon as it is given."""
    with pytest.raises(ConfigError, match="invalid Redis URL") as info:
        RedisConnectionManager(url, retries=0).connect()
    assert PASSWORD not in str(info.value)


def test_unparseable_url_is_config_error() -> None:
    """A URL that cannot even be split (an unclosed IPv6 bracket) is ConfigError."""
    with pytest.raises(ConfigError):
        RedisConnectionManager("redis://:s3cret-Pa55@[::1:6379/0")


@pytest.mark.parametrize(
    "url",
    [
        "redis://alice:s3cret-Pa55@127.0.0.1:1/0",
        "rediss://:s3cret-Pa55@127.0.0.1:1",
        "redis+sentinel://:s3cret-Pa55@127.0.0.1:1/mymaster",
        "unix://:s3cret-Pa55@/tmp/none.sock",
    ],
)
def test_repr_never_contains_the_password(url: str) -> None:
    """repr() and the stats show the URL with the password masked."""
    manager = RedisConnectionManager(url)

    assert PASSWORD not in repr(manager)
    assert "***" in repr(manager)
    assert "connected=False" in repr(manager)
    assert PASSWORD not in manager.get_connection_stats().url


@pytest.mark.parametrize(
    "url", ["redis://alice:s3cret-Pa55@127.0.0.1:1/0", "rediss://:s3cret-Pa55@127.0.0.1:1"]
)
def test_repr_and_errors_after_a_failed_connect_hide_the_password(url: str) -> None:
    """After a failed connect the error, repr and last_error still never show the password."""
    manager = RedisConnectionManager(url, retries=0, connect_timeout=0.5)

    with pytest.raises(ConnectionFailed) as info:
        manager.connect()

    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(manager)
    assert PASSWORD not in (manager.get_connection_stats().last_error or "")


def test_unix_socket_url_reaches_the_connection_attempt(tmp_path: Path) -> None:
    """A unix:// URL to a missing socket fails as ConnectionFailed, like any unreachable server."""
    manager = RedisConnectionManager(f"unix://{tmp_path}/none.sock", retries=0)
    with pytest.raises(ConnectionFailed, match="cannot reach Redis"):
        manager.connect()


def test_repr_of_a_connected_manager(shim_settings: Settings) -> None:
    """A connected manager says so in its repr."""
    url = shim_settings.redis_url
    with RedisConnectionManager(url) as manager:
        assert repr(manager) == f"RedisConnectionManager({url!r}, connected=True)"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:s3cret-Pa55@s1:26379",  # no service name
        "redis+sentinel://:s3cret-Pa55@/mymaster",  # no sentinel hosts
        "redis+sentinel:///mymaster",
    ],
)
def test_sentinel_url_without_hosts_or_service_is_config_error(url: str) -> None:
    """A Sentinel URL missing its hosts or service name is ConfigError as soon as it is given,
    password masked."""
    with pytest.raises(ConfigError, match="invalid Sentinel URL") as info:
        RedisConnectionManager(url)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis+sentinel://s1:port/mymaster", "redis+sentinel://s1:26379/mymaster/db0"]
)
def test_sentinel_url_with_bad_port_or_db_is_config_error(url: str) -> None:
    """A Sentinel URL whose port or database is not a number is ConfigError."""
    with pytest.raises(ConfigError, match=r"invalid Redis URL .* must be a number"):
        RedisConnectionManager(url)


# ------------------------------------------------------------------- embedded
def test_embedded_managers_of_the_same_name_share_data(
    embedded_name: Callable[[], str],
) -> None:
    """Two ``embedded://name`` managers in one process see the same in-process server."""
    url = f"embedded://{embedded_name()}"
    first, second = RedisConnectionManager(url), RedisConnectionManager(url)
    assert first.is_embedded

    first.get_client().set("k", "shared")

    assert second.get_client().get("k") == "shared"
    first.disconnect()
    assert RedisConnectionManager(url).get_client().get("k") == "shared"  # outlives managers


def test_embedded_managers_of_different_names_are_isolated(
    embedded_name: Callable[[], str],
) -> None:
    """Managers of different embedded names never see each other's keys."""
    one = RedisConnectionManager(f"embedded://{embedded_name()}")
    two = RedisConnectionManager(f"embedded://{embedded_name()}")

    one.get_client().set("k", "one")

    assert two.get_client().get("k") is None
    assert two.get_client().dbsize() == 0


def test_forget_embedded_drops_the_data(embedded_name: Callable[[], str]) -> None:
    """forget_embedded(name) discards the server, so the next manager of that name starts empty."""
    name = embedded_name()
    RedisConnectionManager(f"embedded://{name}").get_client().set("k", "v")

    forget_embedded(name)

    assert RedisConnectionManager(f"embedded://{name}").get_client().get("k") is None


def test_embedded_manager_runs_lua_scripts(embedded_name: Callable[[], str]) -> None:
    """The embedded server runs Lua (the queue's scripts need it) with no server installed."""
    client = RedisConnectionManager(f"embedded://{embedded_name()}").connect()
    assert client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "n", 5) == 5


# ------------------------------------------------------- refusals fail fast
@pytest.fixture
def password_server(shim_redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server whose default user has a password made of URL-reserved characters."""
    return shim_redis_server_factory(
        args=["--requirepass", "p#a/s?s@w0rd"], ping_options={"password": "p#a/s?s@w0rd"}
    )


@pytest.mark.shim_real_redis
def test_a_password_with_reserved_characters_works_as_written(password_server: RedisServer) -> None:
    """'#', '/', '?' and '@' in a password need no escaping: the URL is split at its last '@'."""
    url = f"redis://:p#a/s?s@w0rd@127.0.0.1:{password_server.port}/0"
    with RedisConnectionManager(url) as manager:
        assert manager.get_client().ping() is True
        assert "p#a/s?s@w0rd" not in repr(manager)


@pytest.mark.shim_real_redis
def test_a_wrong_password_says_so_at_once(password_server: RedisServer) -> None:
    """A wrong password is AuthenticationFailed saying 'wrong password', after one attempt (it
    took 8 retries and said 'cannot reach Redis')."""
    manager = RedisConnectionManager(f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0")

    with pytest.raises(AuthenticationFailed, match="wrong password") as info:
        manager.connect()

    assert PASSWORD not in str(info.value)
    assert isinstance(info.value, ConnectionFailed)
    assert manager.get_connection_stats().connects == 1  # no retry
    assert PASSWORD not in (manager.get_connection_stats().last_error or "")


@pytest.mark.shim_real_redis
def test_no_password_while_the_default_user_is_off(
    shim_redis_server_factory: Callable[..., RedisServer],
) -> None:
    """No password where one is needed is AuthenticationFailed saying so, after one attempt."""
    server = shim_redis_server_factory(
        args=["--user", "default", "off", "--user", "admin", "on", ">pw", "~*", "&*", "+@all"],
        ping_options={"username": "admin", "password": "pw"},
    )
    manager = RedisConnectionManager(server.url)

    with pytest.raises(AuthenticationFailed, match="needs a password and the URL gives none"):
        manager.connect()

    assert manager.get_connection_stats().connects == 1


@pytest.mark.shim_real_redis
def test_a_refusal_during_work_is_not_retried(password_server: RedisServer) -> None:
    """A password changed under a running client: the next reconnect is refused once, as
    AuthenticationFailed from a queue-style call, not retried for seconds."""
    url = f"redis://:p%23a%2Fs%3Fs%40w0rd@127.0.0.1:{password_server.port}/0"
    manager = RedisConnectionManager(url)
    admin = redis.Redis(port=password_server.port, password="p#a/s?s@w0rd")
    try:
        client = manager.connect()
        admin.config_set("requirepass", "changed")
        client.connection_pool.disconnect()

        class Caller:
            _url = url

            @redis_errors
            def call(self) -> object:
                return client.ping()

        with pytest.raises(AuthenticationFailed, match="wrong password"):
            Caller().call()
    finally:
        admin.config_set("requirepass", "p#a/s?s@w0rd")
        admin.close()
        manager.disconnect()


@pytest.mark.shim_real_redis
def test_cli_hides_a_password_with_a_hash_and_names_a_wrong_one(
    password_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shim status` with a '#' in a wrong password prints 'wrong password', never the password
    (it printed "... as 'topsecret'")."""
    url = f"redis://shim:topsecret#42@127.0.0.1:{password_server.port}/0"
    with pytest.raises(SystemExit) as info:
        main(["status", "--redis", url])

    out, err = capsys.readouterr()
    assert info.value.code == 3
    assert "topsecret" not in out + err
    assert "wrong password" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("query", ["foo=1", "cluster=true", "ssl_ca_certs="])
def test_cli_reports_a_bad_url_parameter_in_one_line(
    query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad URL parameter is one `error:` line naming it, exit 2 (it was a raw traceback)."""
    with pytest.raises(SystemExit) as info:
        main(["status", "--redis", f"redis://:{PASSWORD}@127.0.0.1:1/0?{query}"])

    _out, err = capsys.readouterr()
    assert info.value.code == 2
    assert err.startswith("error: ")
    assert query.split("=", maxsplit=1)[0] in err
    assert PASSWORD not in err
    assert len(err.strip().splitlines()) == 1
