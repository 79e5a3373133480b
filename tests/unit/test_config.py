"""Settings.load: overrides beat ``SHIM_*`` variables beat defaults; bad values are ConfigError."""

from __future__ import annotations

import re

import attrs
import pytest

from shim_core import config
from shim_core.config import Settings
from shim_core.errors import ConfigError, ShimError


def test_defaults_when_nothing_is_given() -> None:
    """With no overrides and an empty environment every field takes its documented default."""
    settings = Settings.load(env={})

    assert settings == Settings()
    assert settings.redis_url == config.DEFAULT_REDIS_URL == "embedded://"
    assert settings.namespace == config.DEFAULT_NAMESPACE
    assert settings.heartbeat_interval == config.DEFAULT_HEARTBEAT_INTERVAL
    assert settings.lease_ms == config.DEFAULT_LEASE_MS
    assert settings.max_attempts == config.DEFAULT_MAX_ATTEMPTS
    assert settings.backoff_ms == config.DEFAULT_BACKOFF_MS
    assert settings.backoff_jitter == 0.0
    assert settings.max_stalled == config.DEFAULT_MAX_STALLED
    assert settings.max_payload_bytes == config.DEFAULT_MAX_PAYLOAD_BYTES
    assert settings.retention_ms == config.DEFAULT_RETENTION_MS


def test_environment_maps_every_field_and_parses_its_type() -> None:
    """Each field is read from ``SHIM_<FIELD>`` and parsed to the field's type."""
    env = {
        "SHIM_REDIS_URL": "redis://example:6380/2",
        "SHIM_NAMESPACE": "team-a",
        "SHIM_HEARTBEAT_INTERVAL": "2.5",
        "SHIM_LEASE_MS": "1234",
        "SHIM_MAX_ATTEMPTS": "7",
        "SHIM_BACKOFF_MS": "0",
        "SHIM_BACKOFF_JITTER": "0.25",
        "SHIM_MAX_STALLED": "0",
        "SHIM_MAX_PAYLOAD_BYTES": "99",
        "SHIM_RETENTION_MS": "0",
    }
    settings = Settings.load(env=env)

    assert settings == Settings(
        redis_url="redis://example:6380/2",
        namespace="team-a",
        heartbeat_interval=2.5,
        lease_ms=1234,
        max_attempts=7,
        backoff_ms=0,
        backoff_jitter=0.25,
        max_stalled=0,
        max_payload_bytes=99,
        retention_ms=0,
    )
    assert type(settings.lease_ms) is int
    assert type(settings.heartbeat_interval) is float


def test_overrides_beat_environment_which_beats_defaults() -> None:
    """An override beats its variable; a variable beats the default of a field not overridden."""
    env = {"SHIM_NAMESPACE": "from-env", "SHIM_LEASE_MS": "5000"}

    settings = Settings.load(env=env, namespace="from-arg")

    assert settings.namespace == "from-arg"
    assert settings.lease_ms == 5000
    assert settings.max_attempts == config.DEFAULT_MAX_ATTEMPTS


def test_none_override_means_unset() -> None:
    """A None override (an absent CLI option) falls through to the environment, then the default."""
    settings = Settings.load(env={"SHIM_NAMESPACE": "from-env"}, namespace=None, lease_ms=None)

    assert settings.namespace == "from-env"
    assert settings.lease_ms == config.DEFAULT_LEASE_MS


def test_empty_environment_value_means_unset() -> None:
    """``SHIM_X=`` (set but empty) is ignored rather than parsed."""
    settings = Settings.load(env={"SHIM_LEASE_MS": "", "SHIM_NAMESPACE": ""})

    assert settings.lease_ms == config.DEFAULT_LEASE_MS
    assert settings.namespace == config.DEFAULT_NAMESPACE


def test_unrelated_and_lowercase_variables_are_ignored() -> None:
    """Only upper-case ``SHIM_<FIELD>`` names are read; the rest is ignored."""
    settings = Settings.load(env={"shim_lease_ms": "1", "SHIM_UNKNOWN": "x", "LEASE_MS": "1"})

    assert settings == Settings()


def test_load_reads_os_environ_when_env_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``env`` the process environment is read."""
    monkeypatch.setenv("SHIM_MAX_ATTEMPTS", "9")

    assert Settings.load().max_attempts == 9


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SHIM_LEASE_MS", "abc"),
        ("SHIM_LEASE_MS", "1.5"),
        ("SHIM_LEASE_MS", "1e3"),
        ("SHIM_HEARTBEAT_INTERVAL", "fast"),
        ("SHIM_BACKOFF_JITTER", "half"),
    ],
)
def test_unparseable_environment_value_is_config_error(variable: str, raw: str) -> None:
    """A variable that does not parse to the field's type raises ConfigError naming the variable."""
    expected = re.escape(f"{variable}={raw!r} is not a valid value")
    with pytest.raises(ConfigError, match=expected) as info:
        Settings.load(env={variable: raw})
    assert isinstance(info.value, ShimError)
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None  # raised "from None": one clean message


def test_unknown_overrides_are_rejected_by_name() -> None:
    """Overrides that name no setting raise ConfigError listing them sorted."""
    with pytest.raises(ConfigError, match=r"unknown setting\(s\): lease, zeta$"):
        Settings.load(env={}, zeta=1, lease=5, namespace="ok")


def test_unknown_override_of_none_is_still_rejected() -> None:
    """Even a None override of an unknown name is refused (a typo never passes silently)."""
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(env={}, leasems=None)


@pytest.mark.parametrize(
    "field", ["heartbeat_interval", "lease_ms", "max_attempts", "max_payload_bytes"]
)
@pytest.mark.parametrize("value", [0, -1])
def test_positive_validator(field: str, value: int) -> None:
    """Fields that must be positive refuse zero and negatives with a message naming the field."""
    with pytest.raises(ConfigError, match=rf"{field} must be positive, got {value}"):
        Settings.load(env={}, **{field: value})


@pytest.mark.parametrize("field", ["backoff_ms", "max_stalled", "retention_ms"])
def test_non_negative_validator(field: str) -> None:
    """Fields that may be zero accept 0 and refuse negatives."""
    assert getattr(Settings.load(env={}, **{field: 0}), field) == 0
    with pytest.raises(ConfigError, match=rf"{field} must not be negative, got -1"):
        Settings.load(env={}, **{field: -1})


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_fraction_validator_accepts_closed_unit_interval(value: float) -> None:
    """backoff_jitter accepts every value from 0 to 1 inclusive."""
    assert Settings.load(env={}, backoff_jitter=value).backoff_jitter == value


@pytest.mark.parametrize("raw", ["-0.01", "1.01", "nan"])
def test_fraction_validator_refuses_outside_unit_interval(raw: str) -> None:
    """backoff_jitter outside [0, 1] (or NaN) from the environment is ConfigError."""
    with pytest.raises(ConfigError, match="backoff_jitter must be between 0 and 1"):
        Settings.load(env={"SHIM_BACKOFF_JITTER": raw})


def test_validators_run_on_environment_values() -> None:
    """A parsed environment value still goes through the field's validator."""
    with pytest.raises(ConfigError, match="lease_ms must be positive"):
        Settings.load(env={"SHIM_LEASE_MS": "0"})


def test_positive_validator_refuses_nan() -> None:
    """SHIM_HEARTBEAT_INTERVAL=nan is refused: a NaN interval would never schedule a beat."""
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        Settings.load(env={"SHIM_HEARTBEAT_INTERVAL": "nan"})


@pytest.mark.parametrize("name", ["a", "team-a", "Team_1.prod", "0ns", "x" * 64])
def test_valid_namespace_names(name: str) -> None:
    """Letters, digits, '.', '_' and '-' (1-64 characters, alphanumeric first) are accepted."""
    assert Settings.load(env={}, namespace=name).namespace == name


@pytest.mark.parametrize(
    "name", ["", "-lead", ".lead", "_lead", "has space", "brace{x}", "col:on", "x" * 65, "ümlaut"]
)
def test_invalid_namespace_names(name: str) -> None:
    """An empty or too long namespace, or one with characters outside the safe set, is refused."""
    with pytest.raises(ConfigError, match="invalid namespace"):
        Settings.load(env={}, namespace=name)


def test_invalid_namespace_from_environment() -> None:
    """The namespace validator also applies to ``SHIM_NAMESPACE``."""
    with pytest.raises(ConfigError, match="invalid namespace 'a b'"):
        Settings.load(env={"SHIM_NAMESPACE": "a b"})


def test_namespace_with_trailing_newline_is_refused() -> None:
    """A namespace with a trailing newline (e.g. read from a file) is refused, not put into keys."""
    with pytest.raises(ConfigError, match="invalid namespace"):
        Settings.load(env={"SHIM_NAMESPACE": "team-a\n"})


def test_settings_are_frozen() -> None:
    """Settings cannot be mutated after loading; evolve makes a validated copy."""
    settings = Settings.load(env={})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.lease_ms = 1  # type: ignore[misc]
    with pytest.raises(ConfigError):
        attrs.evolve(settings, lease_ms=0)
