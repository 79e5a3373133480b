"""The ``redis`` checkpoint backend (the default): checkpoints live next to the tasks.

Layout, under the namespace prefix ``shim:{ns}:``:

* ``ckpt:<task id>`` — list of the task's last 10 checkpoints as JSON, newest first
* ``ckpt-session:<session id>`` — set of the ids of tasks that checkpointed in the session
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import redis

from shim_core import serde
from shim_core.connection import redis_errors
from shim_core.contracts import Checkpoint
from shim_core.keys import Keys

log = logging.getLogger(__name__)

#: Checkpoints kept per task; older ones are trimmed on save.
KEEP = 10


def session_key(keys: Keys, session_id: str) -> str:
    """The set of task ids that saved checkpoints in ``session_id``."""
    return f"{keys.prefix}ckpt-session:{session_id}"


def decode(raw: str, where: str) -> Checkpoint | None:
    """A stored checkpoint, or None (logged) when it cannot be decoded."""
    try:
        return serde.loads(raw, Checkpoint)
    except Exception as exc:  # one corrupt entry must not hide the others
        log.warning("skipping corrupt checkpoint in %s: %s", where, exc)
        return None


def sort_newest_first(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """By creation time, newest first; ties keep their (per task newest-first) order."""
    return sorted(checkpoints, key=lambda c: c.created_at_ms, reverse=True)


@attrs.define
class RedisCheckpointBackend:
    """Checkpoints in Redis lists, one per task, indexed by session."""

    client: Any  # redis.Redis with decode_responses=True (str replies)
    keys: Keys
    keep: int = attrs.field(default=KEEP, validator=attrs.validators.ge(1))
    name: str = "redis"
    _url: str = ""

    @redis_errors
    def save(self, checkpoint: Checkpoint) -> str:
        """Push ``checkpoint`` and trim the task's list, in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        self._push(pipe, checkpoint)
        pipe.execute()
        return checkpoint.id

    @redis_errors
    def save_leased(self, checkpoint: Checkpoint, token: int) -> str | None:
        """Save ``checkpoint`` only while ``token`` is the task's current lease, atomically
        (WATCH on the task): a worker presumed dead cannot overwrite its successor's state.
        Returns None, saving nothing, when the lease is not current."""
        task_key = self.keys.task(checkpoint.task_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(task_key)
                    status, lease = pipe.hmget(task_key, "status", "lease")
                    if lease != str(token) or status not in ("running", "claimed"):
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    self._push(pipe, checkpoint)
                    pipe.execute()
                    return checkpoint.id
                except redis.WatchError:
                    continue  # the task changed (a progress report, say): check again

    def _push(self, pipe: Any, checkpoint: Checkpoint) -> None:
        key = self.keys.ckpt(checkpoint.task_id)
        pipe.lpush(key, serde.dumps(checkpoint))
        pipe.ltrim(key, 0, self.keep - 1)
        if checkpoint.session_id:
            pipe.sadd(session_key(self.keys, checkpoint.session_id), checkpoint.task_id)

    @redis_errors
    def latest(self, task_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``task_id``, or None."""
        key = self.keys.ckpt(task_id)
        for raw in self.client.lrange(key, 0, -1):
            found = decode(raw, key)
            if found is not None:
                return found
        return None

    @redis_errors
    def for_session(self, session_id: str) -> list[Checkpoint]:
        """Every kept checkpoint of the session's tasks, newest first."""
        task_ids = sorted(self.client.smembers(session_key(self.keys, session_id)))
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.lrange(self.keys.ckpt(task_id), 0, -1)
        found: list[Checkpoint] = []
        for task_id, entries in zip(task_ids, pipe.execute(), strict=True):
            for raw in entries:
                checkpoint = decode(raw, self.keys.ckpt(task_id))
                if checkpoint is not None and checkpoint.session_id == session_id:
                    found.append(checkpoint)
        return sort_newest_first(found)

    @redis_errors
    def delete(self, task_id: str) -> int:
        """Delete the task's checkpoints (and its session entries); returns how many."""
        key = self.keys.ckpt(task_id)

        def remove(pipe: Any) -> int:
            entries = pipe.lrange(key, 0, -1)  # WATCHed: a concurrent save retries the transaction
            sessions = {_session_of(raw) for raw in entries} - {""}
            pipe.multi()
            pipe.delete(key)
            for session_id in sorted(sessions):
                pipe.srem(session_key(self.keys, session_id), task_id)
            return len(entries)

        count: int = self.client.transaction(remove, key, value_from_callable=True)
        return count


def _session_of(raw: str) -> str:
    try:
        value = json.loads(raw).get("session_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


@attrs.define
class RedisCheckpointBackendFactory:
    """Builds :class:`RedisCheckpointBackend` for a connection and namespace."""

    name: str = "redis"

    def create(self, connection: Any, settings: Any) -> RedisCheckpointBackend:
        """A backend on ``connection.get_client()`` in ``settings.namespace``."""
        return RedisCheckpointBackend(
            client=connection.get_client(),
            keys=Keys(settings.namespace),
            url=getattr(connection, "url", ""),
        )
