"""The Redis ACL permissions SHIM needs, the least-privilege ACL line, and a start-up check.

Every SHIM process (workers, ``shim run``, the CLI) talks to Redis with the commands of
:data:`REQUIRED_COMMANDS`: those its Python code sends and those its Lua scripts call (Redis checks
a script's commands against the calling user too). :func:`acl_setuser` writes the ACL line that
grants exactly these on one namespace's keys and channels. :func:`check_permissions` asks the server
whether the connected user may run each of them, without running any: it queues them in a
``MULTI`` and discards it (Redis refuses a forbidden command when it is queued), so a missing
permission stops a worker at start-up with a message naming it, instead of failing every reaper
pass in silence.
"""

from __future__ import annotations

from typing import Any

import redis

from shim_core.connection import RedisConnectionManager
from shim_core.errors import PermissionDenied
from shim_core.keys import Keys
from shim_core.redact import mask_url

#: What SHIM sends to Redis, as ACL rules name them (``pubsub|numsub`` is a subcommand). Connecting
#: needs nothing more: HELLO and AUTH are allowed to every user.
REQUIRED_COMMANDS: tuple[str, ...] = (
    # transactions, scripts and pipelines
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "evalsha",
    "script|load",
    "script|exists",
    # health, clock, restart detection, consistency checks
    "ping",
    "time",
    "wait",
    "select",
    "info",
    "scan",
    # keys, by type (Python code and Lua scripts)
    "del",
    "exists",
    "get",
    "set",
    "incrby",
    "hset",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "sadd",
    "srem",
    "smembers",
    "srandmember",
    "zadd",
    "zrem",
    "zcard",
    "zscore",
    "zrange",
    "zrangebyscore",
    "bzpopmin",
    "lpush",
    "rpush",
    "ltrim",
    "lrange",
    # the durable event history (a stream)
    "xadd",
    "xrange",
    "xrevrange",
    "xread",
    # events and liveness
    "publish",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "pubsub|numsub",
    "pubsub|channels",
)

#: The channel patterns SHIM subscribes to with PSUBSCRIBE, relative to the namespace prefix.
#: Redis compares a PSUBSCRIBE pattern with the user's channel rules literally, so each needs a
#: rule of its own besides the namespace-wide one.
SUBSCRIBED_PATTERNS: tuple[str, ...] = ("task:*",)

_PROBE = "acl-check"


def acl_setuser(namespace: str, user: str = "shim", password: str = "PASSWORD") -> str:
    """The least-privilege ``ACL SETUSER`` line for SHIM on ``namespace``: its keys, its
    channels, and :data:`REQUIRED_COMMANDS` only."""
    prefix = Keys(namespace).prefix
    channels = " ".join(f"&{prefix}{p}" for p in ("*", *SUBSCRIBED_PATTERNS))
    commands = " ".join(f"+{c}" for c in REQUIRED_COMMANDS)
    return (
        f"ACL SETUSER {user} on >{password} resetkeys ~{prefix}* resetchannels {channels} "
        f"-@all {commands}"
    )


def _probes(keys: Keys) -> list[tuple[str, list[Any]]]:
    """One harmless use of every required command (never run: queued, then discarded)."""
    key, channel = f"{keys.prefix}{_PROBE}", keys.channel(_PROBE)
    sha = "0" * 40
    commands: dict[str, list[Any]] = {
        "watch": ["WATCH", key],  # refused inside MULTI, but only after the ACL check
        "unwatch": ["UNWATCH"],
        "evalsha": ["EVALSHA", sha, 1, key],
        "script|load": ["SCRIPT", "LOAD", "return 1"],
        "script|exists": ["SCRIPT", "EXISTS", sha],
        "ping": ["PING"],
        "time": ["TIME"],
        "wait": ["WAIT", 0, 0],
        "select": ["SELECT", 0],
        "get": ["GET", key],
        "info": ["INFO", "server"],
        "scan": ["SCAN", 0, "MATCH", f"{keys.prefix}*", "COUNT", 1],
        "del": ["DEL", key],
        "exists": ["EXISTS", key],
        "set": ["SET", key, "1"],
        "incrby": ["INCRBY", key, 1],
        "hset": ["HSET", key, "f", "1"],
        "hget": ["HGET", key, "f"],
        "hmget": ["HMGET", key, "f"],
        "hgetall": ["HGETALL", key],
        "hdel": ["HDEL", key, "f"],
        "hincrby": ["HINCRBY", key, "f", 1],
        "hincrbyfloat": ["HINCRBYFLOAT", key, "f", 1],
        "sadd": ["SADD", key, "m"],
        "srem": ["SREM", key, "m"],
        "smembers": ["SMEMBERS", key],
        "srandmember": ["SRANDMEMBER", key],
        "zadd": ["ZADD", key, 1, "m"],
        "zrem": ["ZREM", key, "m"],
        "zcard": ["ZCARD", key],
        "zscore": ["ZSCORE", key, "m"],
        "zrange": ["ZRANGE", key, 0, -1],
        "zrangebyscore": ["ZRANGEBYSCORE", key, "-inf", "+inf"],
        "bzpopmin": ["BZPOPMIN", key, 1],
        "lpush": ["LPUSH", key, "v"],
        "rpush": ["RPUSH", key, "v"],
        "ltrim": ["LTRIM", key, 0, -1],
        "lrange": ["LRANGE", key, 0, -1],
        "xadd": ["XADD", key, "*", "e", "1"],
        "xrange": ["XRANGE", key, "-", "+"],
        "xrevrange": ["XREVRANGE", key, "+", "-"],
        "xread": ["XREAD", "COUNT", 1, "STREAMS", key, "0-0"],
        "publish": ["PUBLISH", channel, "x"],
        "subscribe": ["SUBSCRIBE", channel],
        "unsubscribe": ["UNSUBSCRIBE", channel],
        "punsubscribe": ["PUNSUBSCRIBE", channel],
        "pubsub|numsub": ["PUBSUB", "NUMSUB", channel],
        "pubsub|channels": ["PUBSUB", "CHANNELS", channel],
    }
    probes = [(name, commands[name]) for name in REQUIRED_COMMANDS if name in commands]
    probes += [("psubscribe", ["PSUBSCRIBE", keys.channel(p)]) for p in SUBSCRIBED_PATTERNS]
    return probes


def missing_permissions(connection: RedisConnectionManager, namespace: str) -> list[str]:
    """What the connected Redis user may not do of what SHIM needs on ``namespace``: one line
    per refused command, with the server's reason; empty when everything is allowed (and on
    the embedded store, which has no ACL). Runs none of the commands."""
    if connection.is_embedded:
        return []
    client: Any = connection.new_client()
    keys = Keys(namespace)
    # A cluster: ask the master of the namespace's slot, where its scripts run.
    node = client.get_node_from_key(keys.prefix) if hasattr(client, "get_node_from_key") else None
    pool = (node.redis_connection if node is not None else client).connection_pool
    conn: Any = pool.get_connection()
    try:
        return _ask(conn, _probes(keys))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise connection.describe(exc) from exc
    finally:
        conn.disconnect()  # also drops the MULTI, should DISCARD itself be refused
        pool.release(conn)
        client.close()


def _ask(conn: Any, probes: list[tuple[str, list[Any]]]) -> list[str]:
    missing = _refused(conn, [("multi", ["MULTI"])])
    if missing:
        return [f"{missing[0]} (the other commands were not checked)"]
    missing = _refused(conn, [*probes, ("discard", ["DISCARD"])])
    if not any(line.startswith("DISCARD:") for line in missing):
        # EXEC outside a transaction is an error, but only after the ACL check: nothing runs.
        missing += _refused(conn, [("exec", ["EXEC"])])
    return missing


def _refused(conn: Any, probes: list[tuple[str, list[Any]]]) -> list[str]:
    """Send ``probes`` in one write; one line per command the server refused for its ACL."""
    conn.send_packed_command(conn.pack_commands([args for _name, args in probes]))
    missing: list[str] = []
    for name, args in probes:
        try:
            conn.read_response()
        except redis.exceptions.NoPermissionError as exc:
            label = name.replace("|", " ").upper()
            if name == "psubscribe" or "permissions to access" in str(exc):
                label = " ".join(str(arg) for arg in args[:3])  # the key, channel or pattern
            missing.append(f"{label}: {exc}")
        except redis.ResponseError:
            pass  # allowed, and refused for another reason (WATCH inside MULTI, EXEC alone)
    return missing


def check_permissions(connection: RedisConnectionManager, namespace: str) -> None:
    """Raise PermissionDenied, naming every missing command and the ACL line that grants them,
    when the connected Redis user lacks a permission SHIM needs on ``namespace``. For workers
    (and any long-lived process) to call at start-up."""
    missing = missing_permissions(connection, namespace)
    if missing:
        raise PermissionDenied(
            f"the Redis user of {mask_url(connection.url)} may not run what SHIM needs on "
            f"namespace {namespace!r}: "
            + "; ".join(missing)
            + f". Grant it with: {acl_setuser(namespace, connection.username)}",
            missing,
        )


def eviction_risk(connection: RedisConnectionManager) -> str | None:
    """Why the server could drop SHIM's keys under memory pressure (None: it cannot). An
    ``allkeys-*`` policy with a ``maxmemory`` evicts any key, tasks and leases included, which
    loses work silently; ``noeviction`` refuses writes instead, and a ``volatile-*`` policy only
    evicts keys with a time to live (SHIM's only one is the reaper's lock)."""
    if connection.is_embedded:
        return None
    memory = connection.get_client().info("memory")
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if int(memory.get("maxmemory", 0) or 0) and policy.startswith("allkeys-"):
        return (
            f"Redis at {mask_url(connection.url)} evicts any key when full (maxmemory-policy "
            f"{policy}): SHIM's tasks and leases could vanish. Set maxmemory-policy noeviction "
            "(see docs/deployment.md)"
        )
    return None
