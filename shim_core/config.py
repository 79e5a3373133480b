"""One settings object: from arguments, then ``SHIM_*`` environment variables, then defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from shim_core.errors import ConfigError
from shim_core.keys import check_name
from shim_core.redact import mask_url

#: No server needed: the same Lua scripts run in-process on fakeredis.
DEFAULT_REDIS_URL = "embedded://"
#: Tests and tools isolate themselves by namespace; one fleet usually needs only this one.
DEFAULT_NAMESPACE = "default"
#: Seed spec: a worker beats every 10 s and is presumed dead after 3 missed beats.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: A lease outlives three heartbeats, so one slow beat never loses a task to the reaper.
DEFAULT_LEASE_MS = 30_000
#: Seed spec: up to 3 attempts.
DEFAULT_MAX_ATTEMPTS = 3
#: Seed spec: exponential backoff 1 s, 2 s, 4 s.
DEFAULT_BACKOFF_MS = 1_000
#: Seed spec (BullMQ maxStalledCount): a task is recovered from two stalls; the third fails it.
DEFAULT_MAX_STALLED = 2
#: Keeps a runaway payload (a whole file pasted into params) out of Redis memory.
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024
#: How long an agent cools down after a rate limit whose reset time it did not report.
DEFAULT_RATE_LIMIT_COOLDOWN_MS = 60_000
#: Finished tasks are kept a week for analysis, as the seed keeps them (removeOnComplete: false).
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{attr.name} must be positive, got {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"{attr.name} must not be negative, got {value!r}")


def _fraction(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{attr.name} must be between 0 and 1, got {value!r}")


@attrs.frozen
class Settings:
    """Everything a SHIM process needs to know; pass it explicitly, never read globals."""

    #: Shown with its password masked in a repr.
    redis_url: str = attrs.field(default=DEFAULT_REDIS_URL, repr=lambda url: repr(mask_url(url)))
    namespace: str = attrs.field(
        default=DEFAULT_NAMESPACE, validator=lambda _i, _a, v: check_name("namespace", v)
    )
    heartbeat_interval: float = attrs.field(default=DEFAULT_HEARTBEAT_INTERVAL, validator=_positive)
    lease_ms: int = attrs.field(default=DEFAULT_LEASE_MS, validator=_positive)
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=_positive)
    backoff_ms: int = attrs.field(default=DEFAULT_BACKOFF_MS, validator=_non_negative)
    backoff_jitter: float = attrs.field(default=0.0, validator=_fraction)
    max_stalled: int = attrs.field(default=DEFAULT_MAX_STALLED, validator=_non_negative)
    max_payload_bytes: int = attrs.field(default=DEFAULT_MAX_PAYLOAD_BYTES, validator=_positive)
    retention_ms: int = attrs.field(default=DEFAULT_RETENTION_MS, validator=_non_negative)
    rate_limit_cooldown_ms: int = attrs.field(
        default=DEFAULT_RATE_LIMIT_COOLDOWN_MS, validator=_positive
    )
    #: Task signing keys (``SHIM_SECRET``), comma-separated: the first signs, every one verifies
    #: (key rotation). Never shown in a repr.
    secret: str = attrs.field(default="", repr=False)
    #: A file of signing keys, one per line (``SHIM_SECRET_FILE``), after those of ``secret``.
    secret_file: str = ""
    #: PEM file of the CA that signed the Redis server's certificate (``SHIM_TLS_CA``); for
    #: ``rediss://`` URLs only. Empty: the system's trusted CAs.
    tls_ca: str = ""
    #: PEM file of this client's certificate (``SHIM_TLS_CERT``), for servers that ask for one.
    tls_cert: str = ""
    #: PEM file of the private key of ``tls_cert`` (``SHIM_TLS_KEY``); empty when the
    #: certificate file holds the key too.
    tls_key: str = ""
    #: Skip the verification of the server's certificate (``SHIM_TLS_INSECURE=1``): encrypted
    #: but open to a man in the middle. Warned about on every connection manager built with it.
    tls_insecure: bool = False
    #: The sentinels' own password, when it differs from the master's (``SHIM_SENTINEL_PASSWORD``;
    #: the URL's ``?sentinel_password=`` wins). Never shown in a repr.
    sentinel_password: str = attrs.field(default="", repr=False)
    #: Replicas that must hold a completion before it counts as recorded (``SHIM_WAIT_REPLICAS``:
    #: Redis ``WAIT`` after each completion, so an acknowledged one survives a failover); 0: none.
    wait_replicas: int = attrs.field(default=0, validator=_non_negative)
    #: How long a completion waits for those replicas (``SHIM_WAIT_TIMEOUT_MS``).
    wait_timeout_ms: int = attrs.field(default=1_000, validator=_positive)
    #: Run the Lua scripts as one Redis 7 function library (``SHIM_REDIS_FUNCTIONS=1``), about
    #: 8-15 µs less server time per call. Only where no user you do not trust may load
    #: functions: a library is server-wide and anyone with ``function|load`` can replace it
    #: by name, while an EVALSHA runs exactly the code its hash names (docs/deployment.md).
    redis_functions: bool = False

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``overrides`` (None = unset), then ``SHIM_<NAME>`` variables, then the
        defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if overrides.get(field.name) is not None:
                value = overrides.pop(field.name)
                parse = _PARSERS[field.type]
                values[field.name] = (
                    _parse(field.name, value, parse) if isinstance(value, str) else value
                )
                continue
            overrides.pop(field.name, None)
            raw = env.get(f"SHIM_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, raw, _PARSERS[field.type])
        if overrides:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(overrides))}")
        return cls(**values)


def _parse(name: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"SHIM_{name.upper()}={raw!r} is not a valid value") from None


def parse_bool(raw: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case); else
    ValueError."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_PARSERS: dict[Any, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": parse_bool,
    str: str,
    int: int,
    float: float,
    bool: parse_bool,
}
