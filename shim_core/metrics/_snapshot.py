"""One read of a namespace's state for a metrics scrape: the server's clock, then three
pipelined round trips.

Everything comes from what the scripts keep up to date, so the work is bounded by the number of
task types, queues, workers and runs, never by the number of tasks:

1. the ``counts`` hash (tasks per status and type, and ``event:<type>`` totals per event type),
   the ``history`` hash (completed tasks and their total milliseconds per type), the cooldowns,
   the pause flag, and the names of the queues, workers and newest runs;
2. the head of each ready queue, each worker's status and last heartbeat, each run's cost;
3. when each queue head became claimable (``ready_at``).

Data read from Redis is untrusted: a value that does not parse is skipped and counted in
:attr:`Snapshot.invalid`, never raised.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import attrs

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, redis_errors
from shim_core.keys import Keys
from shim_core.models import TaskStatus, WorkerStatus
from shim_core.queue import EVENT_TOTALS
from shim_core.serde import server_ms

T = TypeVar("T")

#: Bounds of one scrape: queues (types and ``@worker`` queues), workers and runs looked at.
MAX_QUEUES = 1_000
MAX_WORKERS = 5_000
MAX_RUNS = 1_000
#: Worker statuses of a live worker (the others crashed or left).
LIVE = (WorkerStatus.IDLE.value, WorkerStatus.BUSY.value)
TASK_STATUSES = frozenset(s.value for s in TaskStatus)
WORKER_STATUSES = frozenset(s.value for s in WorkerStatus)


@attrs.frozen(kw_only=True)
class Snapshot:
    """A namespace's metrics at one instant (server clock ``now_ms``)."""

    now_ms: int
    #: (type, status) -> tasks.
    tasks: dict[tuple[str, str], int]
    #: Event type (``started``, ``failed``, ``retrying``, ``stalled``, ...) -> events since the
    #: counters were introduced.
    events: dict[str, int]
    #: Type -> (completed tasks, their total duration in ms).
    completed: dict[str, tuple[int, int]]
    paused: bool
    #: Agent -> seconds left of its rate-limit cooldown (only agents still cooling down).
    cooldowns: dict[str, float]
    #: Ready queue -> seconds its next task has been claimable (0 when empty).
    queue_latency: dict[str, float]
    #: Worker status -> workers.
    workers: dict[str, int]
    #: Live worker id -> seconds since its last heartbeat.
    heartbeat_age: dict[str, float]
    #: What agents reported spending in the newest runs, USD.
    cost_usd: float
    #: Values found unreadable (not a number, a status of no known kind...).
    invalid: int


class _Parser:
    """Tolerant number parsing that counts what it had to skip."""

    def __init__(self) -> None:
        self.invalid = 0

    def int(self, raw: Any) -> int | None:
        try:
            return int(raw)
        except (TypeError, ValueError):
            self.invalid += raw is not None
            return None

    def reply(self, raw: Any, kind: type[T]) -> T:
        """``raw`` when it is a ``kind`` (a key of another type answers with an error), else
        an empty ``kind``."""
        if isinstance(raw, kind):
            return raw
        self.invalid += 1
        return kind()

    def float(self, raw: Any) -> float | None:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            self.invalid += raw is not None
            return None
        if not math.isfinite(value):
            self.invalid += 1
            return None
        return value


class SnapshotReader:
    """Reads :class:`Snapshot` values of one namespace (one reader per scrape target)."""

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.keys = Keys(settings.namespace)
        self._connection = connection
        self._url = connection.url

    @redis_errors
    def read(self) -> Snapshot:
        """The namespace's metrics now (four round trips)."""
        keys, parse = self.keys, _Parser()
        # Connected on first use: an exporter may start before Redis does. redis-py types
        # replies as bytes | str; with decode_responses they are always str.
        client: Any = self._connection.get_client()
        now_ms = server_ms(client)
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.counts)
        pipe.hgetall(keys.history)
        pipe.hgetall(keys.cooldowns)
        pipe.exists(keys.paused)
        pipe.smembers(keys.queues)
        pipe.smembers(keys.worker_ids)
        pipe.zrange(keys.runs, 0, MAX_RUNS - 1, desc=True)
        replies = pipe.execute(raise_on_error=False)
        counts, history, cooldowns = (parse.reply(r, dict) for r in replies[:3])
        paused = replies[3] == 1
        queues = sorted(parse.reply(replies[4], set))[:MAX_QUEUES]
        worker_ids = sorted(parse.reply(replies[5], set))[:MAX_WORKERS]
        runs = parse.reply(replies[6], list)
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.zrange(keys.ready(queue), 0, 0)
        for worker_id in worker_ids:
            pipe.hmget(keys.worker(worker_id), "status", "last_seen")
        for run_id in runs:
            pipe.hget(keys.run(run_id), "cost_usd")
        replies = pipe.execute(raise_on_error=False)
        n_queues, n_workers = len(queues), len(worker_ids)
        heads = [parse.reply(r, list) for r in replies[:n_queues]]
        workers = [parse.reply(r, list) for r in replies[n_queues : n_queues + n_workers]]
        costs = [parse.float(r) for r in replies[n_queues + n_workers :]]
        tasks, events = _counts(counts, parse)
        worker_counts, ages = _workers(dict(zip(worker_ids, workers, strict=True)), now_ms, parse)
        return Snapshot(
            now_ms=now_ms,
            tasks=tasks,
            events=events,
            completed=_completed(history, parse),
            paused=paused,
            cooldowns=_cooldowns(cooldowns, now_ms, parse),
            queue_latency=self._latency(
                client, dict(zip(queues, heads, strict=True)), now_ms, parse
            ),
            workers=worker_counts,
            heartbeat_age=ages,
            cost_usd=sum(c for c in costs if c is not None and c > 0),
            invalid=parse.invalid,
        )

    def _latency(
        self, client: Any, heads: dict[str, list[Any]], now_ms: int, parse: _Parser
    ) -> dict[str, float]:
        """Seconds the head of each queue has been claimable: from ``ready_at`` (``created_at``
        for a task queued before SHIM kept it)."""
        waiting = {queue: head[0] for queue, head in heads.items() if head}
        pipe = client.pipeline(transaction=False)
        for task_id in waiting.values():
            pipe.hmget(self.keys.task(task_id), "ready_at", "created_at")
        latency = dict.fromkeys(heads, 0.0)
        for queue, reply in zip(waiting, pipe.execute(raise_on_error=False), strict=True):
            ready, created = parse.reply(reply, list) or (None, None)
            since = parse.float(ready if ready is not None else created)
            if since is not None:
                latency[queue] = max(0.0, (now_ms - since) / 1000)
        return latency


def _counts(
    raw: dict[str, str], parse: _Parser
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """The ``counts`` hash: ``<status>:<type>`` task counts and ``event:<type>`` totals."""
    tasks: dict[tuple[str, str], int] = {}
    events: dict[str, int] = {}
    for field, value in raw.items():
        kind, _, name = field.partition(":")
        n = parse.int(value)
        if n is None:
            continue
        if kind == EVENT_TOTALS and name:
            events[name] = n
        elif kind in TASK_STATUSES and name:
            tasks[(name, kind)] = n
        else:
            parse.invalid += 1
    return tasks, events


def _completed(raw: dict[str, str], parse: _Parser) -> dict[str, tuple[int, int]]:
    """The ``history`` hash: ``<type>:n`` completions and ``<type>:ms`` their total duration."""
    out: dict[str, tuple[int, int]] = {}
    for field, value in raw.items():
        task_type, _, kind = field.rpartition(":")
        if kind != "n":
            continue
        n, ms = parse.int(value), parse.int(raw.get(f"{task_type}:ms", 0))
        if n is not None and ms is not None:
            out[task_type] = (n, ms)
    return out


def _cooldowns(raw: dict[str, str], now_ms: int, parse: _Parser) -> dict[str, float]:
    out: dict[str, float] = {}
    for agent, end in raw.items():
        until = parse.float(end)
        if until is not None and until > now_ms:
            out[agent] = (until - now_ms) / 1000
    return out


def _workers(
    raw: dict[str, list[Any]], now_ms: int, parse: _Parser
) -> tuple[dict[str, int], dict[str, float]]:
    """Workers per status, and the heartbeat age of each live one."""
    counts: dict[str, int] = {}
    ages: dict[str, float] = {}
    for worker_id, fields in raw.items():
        status, last_seen = [*fields, None, None][:2]
        if status is None:  # the record is gone (cleaned between the two reads)
            continue
        if status not in WORKER_STATUSES:
            parse.invalid += 1
            continue
        counts[status] = counts.get(status, 0) + 1
        seen = parse.float(last_seen)
        if status in LIVE and seen is not None:
            ages[worker_id] = max(0.0, (now_ms - seen) / 1000)
    return counts, ages
