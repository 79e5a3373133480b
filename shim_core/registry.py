"""WorkerRegistry: who is in the fleet, their health and statistics (seed component 4).

Each worker is a hash ``worker:<id>``; live workers are also in the ``workers`` zset scored by
their heartbeat *deadline* (last beat + interval x allowed misses, server time), so crash detection
is one range query, whatever each worker's interval. A worker process also keeps a pub/sub
subscription to its ``alive:<id>`` channel on its own connection: when the process dies the OS
closes the socket, Redis drops the subscription at once, and ``PUBSUB NUMSUB`` tells the reaper
within one pass — long before the missed heartbeats would. A slow or stopped (SIGSTOP) process
keeps its connection and is only declared crashed by the heartbeat deadline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
import redis

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, redis_errors
from shim_core.errors import ErrorCode
from shim_core.keys import Keys, check_name
from shim_core.models import (
    CurrentTask,
    HeartbeatInfo,
    WorkerCapabilities,
    WorkerRegistration,
    WorkerStats,
    WorkerStatus,
)
from shim_core.scripts import Scripts
from shim_core.serde import converter, from_ms, server_ms

log = logging.getLogger(__name__)

#: Seed spec: a worker is presumed crashed after 3 missed heartbeats.
MISSED_BEATS = 3
#: How long a worker's liveness channel may have no subscriber before the worker is declared
#: crashed: longer than a reconnect of a live worker, far shorter than 3 heartbeats.
DEFAULT_LIVENESS_GRACE_MS = 1_000
#: After a Redis restart every liveness subscription is gone until workers reconnect (their
#: listeners retry every 0.25 s at most); liveness evidence is ignored while the server is younger
#: than this (seconds), so a restart never looks like the death of the whole fleet.
RESTART_GRACE_S = 3


@attrs.frozen
class CrashedWorker:
    """One worker declared crashed by a scan, and what happened to its tasks."""

    worker_id: str
    reason: str
    tasks: dict[str, str]  # task id -> new status ('pending' or 'failed')


@attrs.frozen
class RegistryStats:
    total: int
    by_status: dict[str, int]
    tasks_completed: int
    tasks_failed: int


class HeartbeatRefused(Exception):
    """The registry no longer knows the worker as live (crashed or unknown): re-register."""

    def __init__(self, worker_id: str, lost: list[str], crashed: bool) -> None:
        super().__init__(f"worker {worker_id!r} is {'declared crashed' if crashed else 'unknown'}")
        self.worker_id = worker_id
        self.lost = lost
        self.crashed = crashed


class WorkerRegistry:
    """Register, beat, query and crash-scan the workers of one namespace."""

    def __init__(
        self,
        connection: RedisConnectionManager,
        settings: Settings,
        *,
        liveness_grace_ms: int = DEFAULT_LIVENESS_GRACE_MS,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.client: Any = connection.get_client()
        self.scripts = Scripts(self.client, functions=settings.redis_functions)
        self.liveness_grace_ms = liveness_grace_ms
        self._connection = connection
        self._url = connection.url

    # ------------------------------------------------------------ registration
    @redis_errors
    def register_worker(
        self, registration: WorkerRegistration, *, heartbeat_interval: float | None = None
    ) -> None:
        """Add a worker (idle) with its capabilities; its first heartbeat deadline starts now."""
        check_name("worker id", registration.id)
        interval = heartbeat_interval or registration.heartbeat.interval
        fields = {
            "name": registration.name or registration.id,
            "host": registration.host,
            "pid": str(registration.pid),
            "session_id": registration.session_id,
            "capabilities": json.dumps(converter.unstructure(registration.capabilities)),
        }
        if registration.refused_agents:
            fields["refused"] = json.dumps(registration.refused_agents)
        if registration.denied_executors or registration.denied_types:
            fields["deny"] = json.dumps(
                {
                    "executors": list(registration.denied_executors),
                    "types": list(registration.denied_types),
                }
            )
        self.scripts.call(
            "register",
            [self.keys.worker(registration.id), self.keys.workers, self.keys.worker_ids],
            [
                self.keys.prefix,
                registration.id,
                int(interval * 1000),
                MISSED_BEATS,
                json.dumps(fields),
            ],
        )

    @redis_errors
    def refuse_agent(self, worker_id: str, refused: dict[str, str]) -> None:
        """Record the agents ``worker_id`` stops claiming tasks for (agent -> reason); the claim
        scripts read this field and leave those tasks to other workers."""
        key = self.keys.worker(worker_id)
        if self.client.exists(key):  # never recreate a purged worker's record as a stub
            self.client.hset(key, "refused", json.dumps(refused))

    @redis_errors
    def unregister_worker(self, worker_id: str) -> bool:
        """Mark a worker offline and drop it from the live set (its record stays for queries)."""
        done = self.scripts.call(
            "unregister",
            [self.keys.worker(worker_id), self.keys.workers],
            [self.keys.prefix, worker_id],
        )
        return bool(done)

    # ----------------------------------------------------------------- updates
    @redis_errors
    def update_worker_status(self, worker_id: str, status: WorkerStatus) -> bool:
        """Set a live worker's status; False (and nothing changed) for an unknown, crashed or
        offline worker, which must register again."""
        return bool(self.scripts.call("status", [self.keys.worker(worker_id)], [status.value]))

    @redis_errors
    def record_heartbeat(
        self,
        worker_id: str,
        leases: Sequence[tuple[str, int]] = (),
        *,
        status: WorkerStatus | None = None,
        lease_ms: int | None = None,
    ) -> list[str]:
        """One round trip: renew the worker's deadline and its task leases; returns lost leases.

        Raises HeartbeatRefused when the worker was declared crashed (or is unknown): every one of
        its leases is void and it must register again.
        """
        args: list[Any] = [
            self.keys.prefix,
            worker_id,
            lease_ms or self.settings.lease_ms,
            status.value if status else "",
        ]
        for task_id, token in leases:
            args += [task_id, token]
        reply = self.scripts.call(
            "heartbeat", [self.keys.worker(worker_id), self.keys.workers], args
        )
        if reply[0] != 1:
            gone = reply[0] == ErrorCode.WORKER_GONE
            raise HeartbeatRefused(worker_id, list(reply[1:]), crashed=gone)
        return list(reply[1:])

    @redis_errors
    def assign_task(self, worker_id: str, task_id: str) -> None:
        """Record the task a worker works on (the claim script does this for claims)."""
        self.client.hset(self.keys.worker(worker_id), "current_task", task_id)

    @redis_errors
    def complete_task(self, worker_id: str, duration_ms: int, *, success: bool = True) -> None:
        """Count a finished task (the complete / fail scripts do this for queue calls)."""
        pipe = self.client.pipeline(transaction=False)
        key = self.keys.worker(worker_id)
        pipe.hincrby(key, "tasks_completed" if success else "tasks_failed", 1)
        pipe.hincrby(key, "total_duration", duration_ms)
        pipe.hdel(key, "current_task")
        pipe.execute()

    # ----------------------------------------------------------------- queries
    @redis_errors
    def get_worker(self, worker_id: str) -> WorkerRegistration | None:
        fields = self.client.hgetall(self.keys.worker(worker_id))
        return _decode(fields) if fields else None

    @redis_errors
    def all_workers(self) -> list[WorkerRegistration]:
        """Every worker ever registered in the namespace, by id."""
        ids = sorted(self.client.smembers(self.keys.worker_ids))
        pipe = self.client.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(self.keys.worker(worker_id))
        return _decode_all(pipe.execute())

    def get_workers_by_status(self, *statuses: WorkerStatus) -> list[WorkerRegistration]:
        return [w for w in self.all_workers() if w.status in statuses]

    @redis_errors
    def get_active_workers(self) -> list[WorkerRegistration]:
        """Live workers: idle or busy (read from the live set, not every worker ever seen)."""
        pipe = self.client.pipeline(transaction=False)
        for worker_id in self.live_worker_ids():
            pipe.hgetall(self.keys.worker(worker_id))
        live = (WorkerStatus.IDLE, WorkerStatus.BUSY)
        return [w for w in _decode_all(pipe.execute()) if w.status in live]

    def get_idle_workers(self) -> list[WorkerRegistration]:
        return [w for w in self.get_active_workers() if w.status is WorkerStatus.IDLE]

    @redis_errors
    def live_worker_ids(self) -> list[str]:
        return list(self.client.zrange(self.keys.workers, 0, -1))

    # ---------------------------------------------------------- health checks
    @redis_errors
    def detect_crashed_workers(self, *, use_liveness: bool = True) -> list[CrashedWorker]:
        """Declare crashed the workers that missed their heartbeats or whose process is gone,
        and requeue their tasks, atomically per pass. Safe to run from many processes."""
        alive: list[Any] = []
        if use_liveness:
            ids = self.live_worker_ids()
            if ids:
                counts = self._subscribers([self.keys.alive(i) for i in ids])
                subscribed = {
                    i: counts is None or counts.get(self.keys.alive(i), 0) > 0 for i in ids
                }
                if not all(subscribed.values()) and self._just_restarted():
                    subscribed = dict.fromkeys(ids, True)
                for worker_id, ok in subscribed.items():
                    alive += [worker_id, "1" if ok else "0"]
        reply = self.scripts.call(
            "scan",
            [self.keys.workers, self.keys.active],
            [self.keys.prefix, self.liveness_grace_ms, *alive],
        )
        return _parse_scan(reply)

    def _subscribers(self, channels: list[str]) -> dict[str, int] | None:
        """Subscribers per channel. In a cluster a subscription lives on the node its
        subscriber connected to (a master then, perhaps a replica after a failover): every node
        is asked and the counts summed; None when a node cannot be asked (its subscribers are
        unknown: liveness then decides nothing, the heartbeat deadlines still do)."""
        nodes = self.client.get_nodes() if hasattr(self.client, "get_nodes") else None
        if not nodes:
            return self._count(self.client.pubsub_numsub(*channels), {})
        counts: dict[str, int] = {}
        for node in nodes:
            try:
                self._count(node.redis_connection.pubsub_numsub(*channels), counts)
            except redis.RedisError:
                return None
        return counts

    @staticmethod
    def _count(replies: list[Any], counts: dict[str, int]) -> dict[str, int]:
        for channel, n in replies:
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            counts[name] = counts.get(name, 0) + int(n)
        return counts

    @redis_errors
    def declare_crashed(self, worker_id: str) -> CrashedWorker | None:
        """Declare one live worker crashed now and requeue its tasks (None if it is not live)."""
        reply = self.scripts.call(
            "scan",
            [self.keys.workers, self.keys.active],
            [self.keys.prefix, self.liveness_grace_ms, worker_id, "X"],
        )
        return next((c for c in _parse_scan(reply) if c.worker_id == worker_id), None)

    @redis_errors
    def cleanup_stale_workers(self, max_age_ms: int) -> int:
        """Delete records of crashed / offline workers last seen more than ``max_age_ms`` ago."""
        cutoff = server_ms(self.client) - max_age_ms
        removed = 0
        for worker in self.get_workers_by_status(WorkerStatus.CRASHED, WorkerStatus.OFFLINE):
            last = worker.heartbeat.last_seen
            if last is None or last.timestamp() * 1000 < cutoff:
                self.client.delete(self.keys.worker(worker.id))
                self.client.srem(self.keys.worker_ids, worker.id)
                removed += 1
        return removed

    def get_registry_stats(self) -> RegistryStats:
        workers = self.all_workers()
        by_status: dict[str, int] = {}
        for w in workers:
            by_status[w.status.value] = by_status.get(w.status.value, 0) + 1
        return RegistryStats(
            total=len(workers),
            by_status=by_status,
            tasks_completed=sum(w.stats.tasks_completed for w in workers),
            tasks_failed=sum(w.stats.tasks_failed for w in workers),
        )

    def _just_restarted(self) -> bool:
        """Whether the server is new to its clients: restarted, or a replica that the sentinels
        just promoted. Subscriptions then still come back, and a missing one proves nothing."""
        switched = self._connection.switched_at
        if switched is not None and time.monotonic() - switched < RESTART_GRACE_S:
            return True
        try:
            uptime = self.client.info("server").get("uptime_in_seconds", RESTART_GRACE_S)
        except redis.ResponseError:  # the embedded store has no INFO, and never restarts
            return False
        return int(uptime) < RESTART_GRACE_S


def _parse_scan(reply: list[Any]) -> list[CrashedWorker]:
    crashed: list[CrashedWorker] = []
    i = 0
    while i < len(reply):
        worker, reason, n = reply[i], reply[i + 1], int(reply[i + 2])
        pairs = reply[i + 3 : i + 3 + 2 * n]
        crashed.append(
            CrashedWorker(worker, reason, dict(zip(pairs[::2], pairs[1::2], strict=True)))
        )
        i += 3 + 2 * n
    return crashed


def _decode_all(rows: list[dict[str, str]]) -> list[WorkerRegistration]:
    """The workers of ``rows`` (hashes read from Redis, untrusted), one at a time: a hash that
    does not decode is left out and logged, never the reason no worker can be listed."""
    found: list[WorkerRegistration] = []
    for fields in rows:
        if not fields:
            continue
        try:
            found.append(_decode(fields))
        except Exception as exc:  # untrusted data
            log.warning("worker record %r does not decode: %s", fields.get("id", "?"), exc)
    return found


def _decode(fields: dict[str, str]) -> WorkerRegistration:
    completed, failed = int(fields.get("tasks_completed", 0)), int(fields.get("tasks_failed", 0))
    total = float(fields.get("total_duration", 0))
    interval_ms = int(fields.get("interval_ms", 10_000))
    current = fields.get("current_task")
    return WorkerRegistration(
        id=fields["id"],
        name=fields.get("name", ""),
        host=fields.get("host", ""),
        pid=int(fields.get("pid") or 0),
        session_id=fields.get("session_id", ""),
        status=WorkerStatus(fields.get("status", "offline")),
        capabilities=converter.structure(
            json.loads(fields.get("capabilities", "{}")), WorkerCapabilities
        ),
        heartbeat=HeartbeatInfo(
            last_seen=from_ms(fields["last_seen"]) if "last_seen" in fields else None,
            interval=interval_ms / 1000,
        ),
        current_task=CurrentTask(task_id=current) if current else None,
        stats=WorkerStats(
            tasks_completed=completed,
            tasks_failed=failed,
            total_duration=total,
            avg_duration=total / completed if completed else 0.0,
        ),
        registered_at=from_ms(fields["registered_at"]) if "registered_at" in fields else None,
        last_activity_at=(
            from_ms(fields["last_activity_at"]) if "last_activity_at" in fields else None
        ),
        refused_agents=_refused(fields.get("refused")),
        denied_executors=_denied(fields.get("deny"), "executors"),
        denied_types=_denied(fields.get("deny"), "types"),
    )


def _denied(raw: str | None, part: str) -> tuple[str, ...]:
    """One list of the ``deny`` field (untrusted JSON); anything malformed reads as empty."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return ()
    items = data.get(part) if isinstance(data, dict) else None
    return tuple(str(i) for i in items) if isinstance(items, list) else ()


def _refused(raw: str | None) -> dict[str, str]:
    """The ``refused`` field (untrusted JSON): agent -> reason; anything malformed is dropped."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}
