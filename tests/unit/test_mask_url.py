"""Redis URLs taken apart and masked: a password never reaches output, in any URL shape, and
every malformed URL or unknown parameter is one ConfigError naming what is wrong."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shim_core.config import Settings
from shim_core.connection import (
    TLS_URL_PARAMETERS,
    URL_PARAMETERS,
    RedisConnectionManager,
    parse_redis_url,
)
from shim_core.errors import ConfigError
from shim_core.redact import mask_url

SECRET = "tops3cret"

#: Every shape a password can take in a URL, with the password it stands for.
SHAPES = [
    f"redis://shim:{SECRET}#42@h:6379/0",
    f"redis://shim:{SECRET}/x?y@h:6379/0",
    f"redis://:{SECRET}@@h:6379",
    f"rediss://shim:{SECRET}%23%2F@h:6380/1",
    f"redis://h:6379/0?password={SECRET}",
    f"redis://h:6379/0?db=1&password={SECRET}#frag&client_name=x",
    f"redis://h:6379/0?pass%77ord={SECRET}",
    f"redis://user@h/0?password={SECRET}",
    f"unix://:{SECRET}@/tmp/redis.sock?db=2",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"redis+sentinel://:{SECRET}@s1:26379,s2:26379/mymaster/0",
    f"redis+sentinel://s1:26379/mymaster?password={SECRET}",
    f"redis://shim:{SECRET}@[::1:6379/0",
    f"redis://shim:{SECRET}@h:notaport/0",
    f"redis://shim:{SECRET}@h:6379/0?foo=1",
]


@pytest.mark.parametrize("url", SHAPES)
def test_mask_url_hides_the_password_in_every_shape(url: str) -> None:
    """mask_url leaves no trace of the password, wherever and however it is written."""
    assert SECRET not in mask_url(url)
    assert "***" in mask_url(url)


@pytest.mark.parametrize("url", SHAPES)
def test_no_error_or_repr_shows_the_password(url: str) -> None:
    """Whether the URL is accepted or refused, neither the error nor the repr shows it."""
    assert SECRET not in shown(url)


def shown(url: str) -> str:
    """What a manager of ``url`` shows: the ConfigError, or its repr and stats URL."""
    try:
        manager = RedisConnectionManager(url)
    except ConfigError as exc:
        return str(exc)
    return repr(manager) + manager.get_connection_stats().url


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://shim:topsecret#42@h:6379/0", "topsecret#42"),
        ("redis://shim:a/b?c@d@h:6379/0", "a/b?c@d"),
        ("redis://shim:a:b@h", "a:b"),
        ("redis://shim:top%23secret@h", "top#secret"),
        ("redis://shim:a+b@h", "a+b"),
        ("redis://h/0?password=a%26b+c", "a&b+c"),
        ("unix://:p@ss@/tmp/r.sock", "p@ss"),
        ("redis+sentinel://:p#w@s1:1,s2:2/m/3", "p#w"),
    ],
)
def test_passwords_with_reserved_characters_are_parsed_whole(url: str, password: str) -> None:
    """The URL is split at its last '@': '#', '/', '?', '@' and ':' stay in the password."""
    assert parse_redis_url(url).options["password"] == password


def test_parts_of_a_url() -> None:
    """Host, port, database, user and parameters land where redis-py expects them."""
    parsed = parse_redis_url("rediss://u:p@[::1]:6380/3?client_name=w&ssl_check_hostname=false")
    assert parsed.scheme == "rediss"
    assert parsed.hosts == (("::1", 6380),)
    assert dict(parsed.options) == {
        "username": "u",
        "password": "p",
        "db": 3,
        "client_name": "w",
        "ssl_check_hostname": False,
    }
    sentinel = parse_redis_url("redis+sentinel://s1,s2:26380/mymaster/2")
    assert sentinel.hosts == (("s1", 26379), ("s2", 26380))
    assert (sentinel.path, sentinel.options["db"]) == ("mymaster", 2)
    assert parse_redis_url("unix:///tmp/r.sock?db=1").path == "/tmp/r.sock"
    assert parse_redis_url("redis://").hosts == (("localhost", 6379),)


@settings(deadline=None)  # a pause of the shared machine is no failure
@given(
    password=st.text(
        alphabet=string.ascii_letters + string.digits + "#/?@:!$&'()*+,;=[]~-._", min_size=8
    )
)
def test_any_password_round_trips_and_is_masked(password: str) -> None:
    """Any password, written raw (a '%' escaped as %25), parses back whole and never shows."""
    assume(password not in "redis://shim:@db.example:6379/0")
    url = f"redis://shim:{password}@db.example:6379/0"
    assert parse_redis_url(url).options["password"] == password
    assert password not in mask_url(url)
    assert (
        parse_redis_url(f"redis://db.example/0?password={quote(password, safe='')}").options[
            "password"
        ]
        == password
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379/0?foo=1", "unknown Redis URL parameter 'foo'"),
        ("redis://h:6379/0?cluster=true", "unknown Redis URL parameter 'cluster'"),
        ("redis://h:6379/0?ssl_ca_certs=", "'ssl_ca_certs' is for TLS: it needs a rediss:// URL"),
        ("rediss://h:6379/0?ssl_ca_certs=", "'ssl_ca_certs' has no value"),
        ("redis://h/0?db=1&db=2", "'db' is given twice"),
        ("redis://h/1?db=2", "gives two databases"),
        ("redis://h/x", "the database must be a number"),
        ("redis://h/0/1", "the path is the database number only"),
        ("redis://h:0/0", "the port must be a number"),
        ("redis://h:99999", "the port must be a number"),
        ("redis://h/0?socket_timeout=soon", "'socket_timeout' has an invalid value 'soon'"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "'ssl_cert_reqs' has an invalid value"),
        ("redis://:a@h/0?password=b", "gives the password twice"),
        ("unix://", "no socket path"),
        ("http://h", "unsupported Redis URL"),
    ],
)
def test_bad_urls_are_one_config_error_naming_the_problem(url: str, message: str) -> None:
    """Each malformed URL is a ConfigError with the cause in its message (no raw traceback)."""
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert message in str(info.value)


def test_an_unknown_parameter_lists_the_accepted_ones() -> None:
    """The error for an unknown parameter lists every parameter the scheme accepts."""
    with pytest.raises(ConfigError) as info:
        parse_redis_url("rediss://h/0?foo=1")
    for name in [*URL_PARAMETERS, *TLS_URL_PARAMETERS]:
        assert name in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://h/0?foo=1")
    assert "ssl_ca_certs" not in str(info.value)


def test_an_invalid_password_value_is_never_echoed() -> None:
    """Even a refused value is not shown when it is the password's."""
    with pytest.raises(ConfigError) as info:
        parse_redis_url(f"redis://h/0?password={SECRET}&password={SECRET}")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("off", False)])
def test_tls_insecure_setting_parses_booleans(raw: str, value: bool) -> None:
    """SHIM_TLS_INSECURE takes 1/0, true/false, yes/no, on/off."""
    assert Settings.load({"SHIM_TLS_INSECURE": raw}).tls_insecure is value


def test_tls_insecure_setting_refuses_other_words() -> None:
    """Anything else is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="SHIM_TLS_INSECURE"):
        Settings.load({"SHIM_TLS_INSECURE": "maybe"})


def test_settings_show_their_url_without_the_password() -> None:
    shown = repr(Settings(redis_url="redis://shim:topsecret#42@db:6379/0"))
    assert "topsecret" not in shown
    assert "redis://shim:***@db:6379/0" in shown


def test_cluster_urls_list_their_seed_nodes_and_have_database_0_only() -> None:
    parsed = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2/0")
    assert parsed.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert parsed.options["password"] == "pw"
    assert parse_redis_url("rediss+cluster://h:7000?ssl_check_hostname=false").scheme == (
        "rediss+cluster"
    )
    with pytest.raises(ConfigError, match="database 0 only"):
        parse_redis_url("redis+cluster://h:7000/3")
    with pytest.raises(ConfigError, match="expected redis\\+cluster://host:port"):
        parse_redis_url("redis+cluster:///0")
    with pytest.raises(ConfigError, match="is for TLS"):
        parse_redis_url("redis+cluster://h:7000?ssl_ca_certs=/ca.pem")


def test_a_sentinel_switch_is_acted_on_once_per_new_master() -> None:
    """Every sentinel announces a switch; the manager drops its connections once per address."""
    manager = RedisConnectionManager("redis+sentinel://127.0.0.1:1/shim")
    manager._master_switched("10.0.0.2:6379")
    manager._master_switched("10.0.0.2:6379")  # the second and third sentinel saying the same
    assert manager.failovers == 1
    manager._master_switched("10.0.0.1:6379")  # and back
    assert manager.failovers == 2
