"""TaskQueue: the atomic task lifecycle on Redis (seed component 2).

Every state change is one Lua script (``shim_core/lua``), so a task is in exactly one state set at
every instant and the event announcing a transition is published by the script that made it.

Round trips per task: ``add`` 1 (a batch of up to 1,000 tasks: 1; larger batches 2 plus one
existence check), ``claim`` 1 (a batch of ``count`` tasks: 1; plus one blocking wait when the queue
is empty), ``complete`` / ``fail`` 1 (``complete_many``: 1 for the whole batch), and a busy
worker's ``complete_and_claim`` 1 for finishing one task and taking the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

import attrs

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, redis_errors
from shim_core.dag import topological_order
from shim_core.errors import (
    ConfigError,
    CorruptTask,
    DuplicateTask,
    ErrorCode,
    MissingDependency,
    PayloadTooLarge,
    ShimError,
    TaskNotFound,
    ValidationError,
    raise_for_code,
)
from shim_core.keys import Keys, check_name
from shim_core.models import FINAL_STATUSES, Claim, Task, TaskResult, TaskStatus
from shim_core.scripts import ScriptLine, Scripts, Written
from shim_core.serde import (
    compact_json,
    evolve_task,
    finite,
    from_ms,
    loads,
    result_json,
    server_ms,
    stored_value,
    task_from_hash,
    task_to_hash,
)
from shim_core.signing import SIGNED_FIELDS, TaskSigner

log = logging.getLogger(__name__)

#: Tasks per add script call: large enough to amortise the round trip, small enough that one
#: script never blocks Redis for more than a few milliseconds.
ADD_CHUNK = 1000
#: Finished tasks removed per clean / drain script call, for the same reason.
REMOVE_CHUNK = 1000
#: Longest single blocking wait of a claimer; a lost wake-up costs at most this much latency.
#: Kept below the connection's socket timeout (redis-py's default is 5 s): a BZPOPMIN as long
#: as the timeout would end in a socket timeout instead of an empty answer.
MAX_BLOCK_SLICE = 4.0
#: A reported reset further away than this is capped (hostile or garbled data cannot park an
#: agent's tasks for ever).
MAX_COOLDOWN_MS = 24 * 3600 * 1000

_TASK_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_UPDATABLE = frozenset(
    {
        "title",
        "description",
        "priority",
        "context",
        "params",
        "estimated_duration",
        "max_attempts",
        "timeout_ms",
        "executor",
    }
)
_FINISHED = ("complete", "failed", "cancelled")
#: Fields the queue keeps: whatever a caller put there is reset when the task is added.
_KEPT_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in attrs.fields(Task)
    if f.name
    in {
        "status",
        "attempts",
        "stalls",
        "lease",
        "worker_id",
        "progress",
        "progress_message",
        "deps_left",
        "result",
        "created_at",
        "claimed_at",
        "completed_at",
        "due_at",
        "lease_deadline",
        "actual_duration",
    }
}


@attrs.frozen
class FailOutcome:
    """What :meth:`TaskQueue.fail` did: scheduled a retry at ``due_at``, or failed for good."""

    final: bool
    due_at: datetime | None = None
    cancelled_dependents: int = 0


@attrs.frozen
class EncodedResult:
    """A TaskResult encoded for the scripts: a worker that checked its result is JSON-able by
    encoding it hands the encoding on instead of encoding twice."""

    json: str
    cost: str

    @classmethod
    def of(cls, result: TaskResult | None) -> EncodedResult:
        return cls(result_json(result or TaskResult(success=True)), _cost(result))


@attrs.frozen
class Settled:
    """What :meth:`TaskQueue.settle` did: per completion, in order, the number of dependents it
    released or the error that refused it; the tasks claimed; ms until the next retry is due
    (-1: none)."""

    outcomes: list[int | ShimError]
    claims: list[Claim]
    next_due_ms: int = -1


class PendingSettle:
    """A :meth:`TaskQueue.settle` written ahead of its reply (:meth:`TaskQueue.send_settle`)."""

    def __init__(
        self,
        queue: TaskQueue,
        completions: Sequence[tuple[str, int, TaskResult | EncodedResult | None]],
        written: Written | None,
        settled: Settled | None = None,
    ) -> None:
        self._url = queue._url
        self._queue = queue
        self._completions = completions
        self._written = written
        self._result = settled

    def ready(self) -> bool:
        """Whether :meth:`result` would return without waiting for Redis."""
        return self._written is None or self._written.ready()

    @redis_errors
    def result(self) -> Settled:
        """What the settle did (as :meth:`TaskQueue.settle` returns it); read once."""
        if self._result is None:
            assert self._written is not None
            written, self._written = self._written, None
            self._result = self._queue._settled(self._completions, written.read())
        return self._result


@attrs.frozen
class TaskState:
    """The moving parts of a task, without its payload (what a live view polls)."""

    id: str
    status: TaskStatus
    progress: float
    progress_message: str
    worker_id: str | None
    attempts: int
    completed_at: datetime | None
    #: When its current attempt was claimed (None before the first claim).
    claimed_at: datetime | None = None


#: The ``counts`` fields ``event:<type>`` hold totals of events by type (the metrics read them),
#: not tasks.
EVENT_TOTALS = "event"

_STATE_FIELDS = (
    "status",
    "progress",
    "progress_message",
    "worker_id",
    "attempts",
    "completed_at",
    "claimed_at",
)


@attrs.frozen
class QueueStats:
    """Task counts by type and status, kept exactly by the scripts (no scan needed)."""

    by_type: dict[str, dict[str, int]]
    paused: bool

    def count(self, status: TaskStatus | str) -> int:
        name = status.value if isinstance(status, TaskStatus) else status
        return sum(counts.get(name, 0) for counts in self.by_type.values())

    @property
    def waiting(self) -> int:
        return self.count(TaskStatus.WAITING)

    @property
    def pending(self) -> int:
        return self.count(TaskStatus.PENDING)

    @property
    def active(self) -> int:
        return self.count(TaskStatus.CLAIMED) + self.count(TaskStatus.RUNNING)

    @property
    def delayed(self) -> int:
        return self.count(TaskStatus.RETRYING)

    @property
    def complete(self) -> int:
        return self.count(TaskStatus.COMPLETE)

    @property
    def failed(self) -> int:
        return self.count(TaskStatus.FAILED)

    @property
    def cancelled(self) -> int:
        return self.count(TaskStatus.CANCELLED)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_type.values())


class TaskQueue:
    """Add, claim, complete, fail, cancel and inspect tasks of one namespace."""

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.settings = settings
        self.connection = connection
        self.keys = Keys(settings.namespace)
        # redis-py types replies as bytes | str; with decode_responses they are always str.
        self.client: Any = connection.get_client()
        self.scripts = Scripts(self.client, functions=settings.redis_functions)
        self._block_slice = _block_slice(self.client)
        self._url = connection.url
        #: Signs every task added when the settings carry a secret (see shim_core.signing).
        self.signer = TaskSigner.from_settings(settings)
        #: Result recordings that fewer replicas than ``wait_replicas`` acknowledged in time.
        self.unreplicated = 0

    # ------------------------------------------------------------------ adding
    def add(self, task: Task) -> Task:
        """Add one task; returns it with the queue's defaults filled in."""
        return self.add_many([task])[0]

    def add_many(self, tasks: Sequence[Task]) -> list[Task]:
        """Add a batch atomically per 1,000 tasks, refusing bad input before anything is written.

        Dependencies may point inside the batch or at existing tasks. Raises DuplicateTask,
        MissingDependency, DependencyCycle, PayloadTooLarge or ValidationError.
        """
        return self._add(tasks)[0]

    def add_run(
        self, run_id: str, record: Mapping[str, str], tasks: Sequence[Task]
    ) -> tuple[list[Task], int]:
        """Add the tasks of a run with its record (``run:<id>`` fields, plus ``created_at``) in
        the same script as the first 1,000 tasks: a run is never recorded without them, nor
        they added without the record (which claims read for the run's budget). Larger runs
        are checked whole before anything is written; later chunks are calls of their own.
        Returns the tasks as added and the record's ``created_at`` (server ms)."""
        check_name("run id", run_id)
        return self._add(tasks, (run_id, compact_json(dict(record))))

    def add_map(
        self,
        template: Task,
        items: Iterable[Mapping[str, Any]],
        *,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Add one task per item: ``template`` with its own id and, as ``params``, the
        template's params updated with the item. Returns the tasks' ids, in the items' order.

        The tasks are those of ``add_many([attrs.evolve(template, id=..., params={
        **template.params, **item}) for item in items])``, added the same way (atomically per
        1,000 tasks, bad input refused before anything is written), several times faster: the
        template is checked and encoded once and sent once per 1,000 tasks, and no ``Task`` is
        made per item. ``ids`` names the tasks (default: fresh ones, 32 hex digits: 96 random
        bits per call and the item's index); the template's own id is not used. A template with
        dependencies, a target worker or an agent taken from its params, or a queue that signs
        its tasks, goes through :meth:`add_many` (same tasks, usual speed). Raises
        ValidationError, DuplicateTask, MissingDependency or PayloadTooLarge.
        """
        params = list(items)
        fresh = ids is None
        if ids is None:
            base = os.urandom(12).hex()
            names = [f"{base}{n:08x}" for n in range(len(params))]
        else:
            if isinstance(ids, str):
                raise ValidationError("add_map: ids must be a sequence of task ids, not a string")
            names = list(ids)
            if len(names) != len(params):
                raise ValidationError(f"add_map: {len(names)} ids for {len(params)} items")
            seen: set[str] = set()
            for task_id in names:
                _check_task_id(task_id)
                if task_id in seen:
                    raise DuplicateTask(task_id)
                seen.add(task_id)
        merged = []
        shared = template.params
        for n, item in enumerate(params):
            if type(item) is not dict and not isinstance(item, Mapping):
                raise ValidationError(f"add_map: item {n} is not a mapping: {item!r}")
            merged.append({**shared, **item})
        if not merged:
            return []
        if (
            self.signer is not None
            or template.dependencies
            or template.assigned_to is not None
            or (template.executor == "agent" and template.agent is None)
        ):
            tasks = [
                evolve_task(template, {"id": i, "params": p})
                for i, p in zip(names, merged, strict=True)
            ]
            return [t.id for t in self._add(tasks)[0]]
        return self._add_map(template, names, merged, fresh=fresh)

    @redis_errors
    def _add_map(
        self, template: Task, ids: list[str], params: list[dict[str, Any]], *, fresh: bool
    ) -> list[str]:
        """The fast path of :meth:`add_map`, for ids checked already. ``fresh``: made here, with
        96 random bits: no existing task has one (left to the scripts' own check)."""
        # The template's own id and params are not the tasks': checked and stored without.
        blank = evolve_task(template, {"id": "template", "params": {}})
        shared = self._hash_of(self._prepare(blank))
        del shared["id"]
        base = sum(map(len, shared)) + sum(map(len, shared.values())) + len("id")
        limit = self.settings.max_payload_bytes
        flat: list[str] = []
        for task_id, value in zip(ids, params, strict=True):
            try:
                text = compact_json(value)  # plain JSON, as stored_value encodes it
            except (TypeError, ValueError):
                try:  # what json refuses, stored_value may still encode (datetimes, attrs...)
                    text = stored_value("params", value) or "{}"
                except (TypeError, ValueError) as exc:
                    raise _unstorable(task_id, exc) from None
            if text == "{}":  # params at their default: left out of the hash, as by add_many
                text = ""
            size = base + len(task_id) + (len("params") + len(text) if text else 0)
            if size > limit:
                raise PayloadTooLarge(task_id, size, limit)
            flat.append(task_id)
            flat.append(text)
        if not fresh and len(ids) > ADD_CHUNK:  # a script checks its own chunk: the rest first
            self._check_existing(ids)
        head = [self.keys.prefix, shared["type"], shared["priority"], str(len(shared))]
        head.extend(chain.from_iterable(shared.items()))
        step = 2 * ADD_CHUNK
        chunks = [[*head, *flat[i : i + step]] for i in range(0, len(flat), step)]
        replies = self.scripts.call_many("add_map", [self.keys.seq, self.keys.queues], chunks)
        for reply in replies:
            if reply[0] < 0:
                raise_for_code(reply[0], reply[1], detail=reply[2])
        return ids

    @redis_errors
    def _add(
        self, tasks: Sequence[Task], run: tuple[str, str] | None = None
    ) -> tuple[list[Task], int]:
        if not tasks:
            return [], 0
        ordered = topological_order(tasks) if len(tasks) > 1 or tasks[0].dependencies else tasks
        prepared = [self._prepare(t) for t in ordered]
        encoded = [self._encode(t) for t in prepared]
        if len(prepared) > ADD_CHUNK:  # one script validates its own chunk; check the rest first
            self._check_existing(
                [t.id for t in prepared], ((t.id, t.dependencies) for t in prepared)
            )
        fixed = [self.keys.seq, self.keys.queues, self.keys.waiting]
        chunks: list[list[str]] = []
        for i in range(0, len(encoded), ADD_CHUNK):
            head = list(run) if run is not None and i == 0 else ["", ""]
            flat = chain.from_iterable(encoded[i : i + ADD_CHUNK])
            chunks.append([self.keys.prefix, *head, *flat])
        replies = self.scripts.call_many("add", fixed, chunks)
        for reply in replies:
            if reply[0] < 0:
                raise_for_code(reply[0], reply[1], detail=reply[2])
        return prepared, int(replies[0][1])

    def _prepare(self, task: Task) -> Task:
        _check_task_id(task.id)
        try:
            check_name("task type", task.type)
            if task.assigned_to is not None:
                check_name("worker id", task.assigned_to)
            if task.on_failure not in (None, "cancel-dependents", "continue"):
                raise ConfigError(
                    f"on_failure must be cancel-dependents or continue, not {task.on_failure!r}"
                )
        except ConfigError as exc:
            raise ValidationError(f"task {task.id!r}: {exc}") from None
        s = self.settings
        changes: dict[str, Any] = {
            **_KEPT_DEFAULTS,
            "agent": _agent_of(task),
            "dependencies": tuple(dict.fromkeys(task.dependencies)),
            "max_attempts": task.max_attempts if task.max_attempts is not None else s.max_attempts,
            "backoff_ms": task.backoff_ms if task.backoff_ms is not None else s.backoff_ms,
            "max_stalled": task.max_stalled if task.max_stalled is not None else s.max_stalled,
        }
        if self.signer is not None:  # signed as added: with the agent filled in
            try:
                changes["signature"] = self.signer.sign(task, changes)
            except (TypeError, ValueError) as exc:  # the signed fields are encoded first
                raise _unstorable(task.id, exc) from None
        return evolve_task(task, changes)

    def _encode(self, task: Task) -> list[str]:
        """The arguments of ``task`` for the add script: a head (number of fields, id, type,
        priority, assigned worker, dependencies) the script reads, then the hash's fields and
        values, which it writes as they are."""
        stored = self._hash_of(task)
        size = sum(map(len, stored)) + sum(map(len, stored.values()))
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(task.id, size, self.settings.max_payload_bytes)
        head = [
            str(len(stored)),
            stored["id"],
            stored["type"],
            stored["priority"],
            stored.get("assigned_to", ""),
            stored.get("dependencies", ""),
        ]
        head.extend(chain.from_iterable(stored.items()))
        return head

    @staticmethod
    def _hash_of(task: Task) -> dict[str, str]:
        """The compact hash of ``task``; ValidationError for values nothing can encode."""
        try:
            return task_to_hash(task, compact=True)
        except (TypeError, ValueError) as exc:  # params json and the converter cannot encode
            raise _unstorable(task.id, exc) from None

    def _check_existing(
        self, ids: list[str], dependencies: Iterable[tuple[str, Sequence[str]]] = ()
    ) -> None:
        """One round trip: a multi-key EXISTS per 1,000 new ids (all zero in the normal case)
        and one EXISTS per dependency outside the batch (``dependencies``: each task's id and
        its dependencies)."""
        known = set(ids)
        needs = [(task_id, deps) for task_id, deps in dependencies if deps]
        outside = sorted({d for _, deps in needs for d in deps} - known)
        pipe = self.client.pipeline(transaction=False)
        chunks = [ids[i : i + ADD_CHUNK] for i in range(0, len(ids), ADD_CHUNK)]
        for chunk in chunks:
            pipe.exists(*(self.keys.task(i) for i in chunk))
        for dep in outside:
            pipe.exists(self.keys.task(dep))
        found = pipe.execute()
        for chunk, count in zip(chunks, found, strict=False):
            if count:
                self._raise_first_existing(chunk)
        missing = {d for d, n in zip(outside, found[len(chunks) :], strict=True) if not n}
        for task_id, deps in needs:
            for dep in deps:
                if dep in missing:
                    raise MissingDependency(task_id, dep)

    def _raise_first_existing(self, ids: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.exists(self.keys.task(task_id))
        for task_id, exists in zip(ids, pipe.execute(), strict=True):
            if exists:
                raise DuplicateTask(task_id)

    # ---------------------------------------------------------------- reading
    @redis_errors
    def get(self, task_id: str) -> Task | None:
        """The task, or None if there is no such task."""
        fields = self.client.hgetall(self.keys.task(task_id))
        return task_from_hash(fields, task_id) if fields else None

    @redis_errors
    def get_many(self, task_ids: Iterable[str]) -> list[Task | None]:
        """Several tasks in one round trip (None for each missing one)."""
        ids = list(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.keys.task(task_id))
        return [
            task_from_hash(f, tid) if f else None
            for tid, f in zip(ids, pipe.execute(), strict=True)
        ]

    @redis_errors
    def states(self, task_ids: Iterable[str]) -> list[TaskState]:
        """The state of several tasks in one round trip, reading only the fields that move
        (missing tasks left out)."""
        ids = list(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self.keys.task(task_id), *_STATE_FIELDS)
        states = []
        for task_id, (status, progress, message, worker, attempts, done, claimed) in zip(
            ids, pipe.execute(), strict=True
        ):
            if status is None:
                continue
            try:
                states.append(
                    TaskState(
                        id=task_id,
                        status=TaskStatus(status),
                        progress=finite(progress or 0),
                        progress_message=message or "",
                        worker_id=worker,
                        attempts=int(attempts or 0),
                        completed_at=from_ms(done) if done else None,
                        claimed_at=from_ms(claimed) if claimed else None,
                    )
                )
            except ValueError as exc:
                raise CorruptTask(task_id, f"task {task_id!r} is corrupt: {exc}") from exc
        return states

    @redis_errors
    def results(self, task_ids: Iterable[str]) -> dict[str, TaskResult]:
        """The recorded results of several tasks in one round trip (tasks without one left out).

        Reads only the ``result`` field: a worker calls this for a task's dependencies."""
        ids = list(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self.keys.task(task_id), "result")
        found: dict[str, TaskResult] = {}
        for task_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                try:
                    found[task_id] = loads(raw, TaskResult)
                except Exception as exc:
                    raise CorruptTask(task_id, f"task {task_id!r} has a corrupt result") from exc
        return found

    @redis_errors
    def update(self, task_id: str, **changes: Any) -> None:
        """Change descriptive fields of an unfinished task (title, priority, params, ...)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValidationError(f"cannot update {', '.join(sorted(unknown))} of a task")
        current = self.get(task_id)
        if current is None:
            raise TaskNotFound(task_id)
        try:
            updated = attrs.evolve(current, **changes)
            fields = task_to_hash(updated)
            task_from_hash(fields, task_id)  # what is written must read back
        except Exception as exc:
            raise ValidationError(f"cannot update task {task_id!r}: {exc}") from None
        written = {k: fields[k] for k in changes if k in fields}
        if set(changes) & set(SIGNED_FIELDS):
            if self.signer is not None:
                if current.signature and not self.signer.verify(current):
                    # Re-signing would bless whatever was changed in Redis behind our back.
                    raise ValidationError(
                        f"task {task_id!r} does not verify (changed in Redis since it was "
                        "signed): not signing it again; cancel it and add it anew"
                    )
                written["signature"] = self.signer.sign(updated)
            elif current.signature:  # workers that verify would refuse the changed task
                raise ValidationError(
                    f"task {task_id!r} is signed: changing its {', '.join(sorted(changes))} "
                    "needs the signing secret (SHIM_SECRET)"
                )
        payload = json.dumps(written)
        reply = self.scripts.call(
            "update", [self.keys.task(task_id)], [self.keys.prefix, task_id, payload]
        )
        raise_for_code(reply[0], task_id, detail=_status_detail(reply))

    # --------------------------------------------------------------- claiming
    @redis_errors
    def claim(
        self,
        types: Sequence[str],
        *,
        worker_id: str = "",
        count: int = 1,
        lease_ms: int | None = None,
        start: bool = True,
        block: float | None = None,
        interrupt: threading.Event | None = None,
    ) -> list[Claim]:
        """Lease up to ``count`` pending tasks of ``types`` (and those assigned to ``worker_id``).

        Highest priority first, FIFO within a priority band. With ``block`` (seconds), waits for
        work without polling: the claimer sleeps in BZPOPMIN on wake markers that the scripts set
        when a task becomes pending, waking early when a retry comes due. Once ``interrupt`` is
        set, the wait ends at its next wake-up with what the claim after it got (``[]``, mostly):
        :meth:`wake_worker` wakes the wait of ``worker_id`` at once. ``start=False`` holds the
        tasks as claimed until :meth:`start`.
        """
        queues = _claim_queues(types, worker_id)
        keys = [
            self.keys.active,
            self.keys.delayed,
            self.keys.paused,
            *(self.keys.ready(q) for q in queues),
        ]
        args = self._claim_args(worker_id, count, lease_ms, start)
        wake = [self.keys.wake(q) for q in queues]
        deadline = None if block is None else time.monotonic() + block
        reply = self.scripts.call("claim", keys, args)
        while True:
            if len(reply) > 1 or deadline is None or (interrupt is not None and interrupt.is_set()):
                return self._claims(reply, 1)
            wait = min(deadline - time.monotonic(), self._block_slice)
            if reply[0] >= 0:
                wait = min(wait, reply[0] / 1000)
            if wait <= 0:
                if deadline - time.monotonic() <= 0:
                    return []
                reply = self.scripts.call("claim", keys, args)
                continue
            # The wait and the claim after it in one round trip (two where that cannot be).
            timeout = round(max(wait, 0.001), 3)
            after = self.scripts.call_after_wait(["BZPOPMIN", *wake, timeout], "claim", keys, args)
            if after is None:
                self.client.bzpopmin(wake, timeout=timeout)
                after = self.scripts.call("claim", keys, args)
            reply = after

    @redis_errors
    def wake_worker(self, worker_id: str) -> None:
        """End the wait of ``worker_id``'s blocking claim now (a marker on the wake key of its
        own queue, ``@<worker_id>``, which only its claims wait on): a worker that stops does not
        sit out its claim block. Unregistering the worker removes a marker nobody took."""
        self.client.zadd(self.keys.wake(f"@{check_name('worker id', worker_id)}"), {"stop": 0})

    def _claims(self, reply: list[Any], first: int) -> list[Claim]:
        """The claims of a script reply (token / fields pairs from index ``first``). A task that
        cannot be decoded is failed for good at once (its hash is corrupt: no attempt can run
        it) and left out, so that the tasks claimed with it still run."""
        claims = []
        for i in range(first, len(reply), 2):
            token, fields = int(reply[i]), _pairs(reply[i + 1])
            try:
                task = task_from_hash(fields)
                claims.append(Claim(task=task, token=token, ready_at_ms=fields.get("ready_at")))
            except CorruptTask as exc:
                task_id = str(fields.get("id", exc.task_id))
                log.warning("task %s failed at once, not run: %s", task_id, exc)
                # It may be gone meanwhile; the reaper then has the last word.
                with contextlib.suppress(ShimError):
                    self.fail(task_id, token, str(exc), permanent=True)
        return claims

    def _claim_args(
        self, worker_id: str, count: int, lease_ms: int | None, start: bool
    ) -> list[Any]:
        return [
            self.keys.prefix,
            worker_id,
            count,
            lease_ms or self.settings.lease_ms,
            "1" if start else "0",
        ]

    @redis_errors
    def complete_and_claim(
        self,
        task_id: str,
        token: int,
        result: TaskResult | None,
        types: Sequence[str],
        *,
        worker_id: str = "",
        count: int = 1,
        lease_ms: int | None = None,
        start: bool = True,
    ) -> tuple[int, list[Claim]]:
        """Complete a task and claim up to ``count`` next ones in one round trip (a busy
        worker's hot path). Returns (dependents released, claims); raises like :meth:`complete`,
        and then claims nothing."""
        settled = self.settle(
            [(task_id, token, result)],
            types,
            worker_id=worker_id,
            count=count,
            lease_ms=lease_ms,
            start=start,
            claim_after_refusal=False,
        )
        outcome = settled.outcomes[0]
        if isinstance(outcome, ShimError):
            raise outcome
        return outcome, settled.claims

    @redis_errors
    def settle(
        self,
        completions: Sequence[tuple[str, int, TaskResult | EncodedResult | None]],
        types: Sequence[str] = (),
        *,
        worker_id: str = "",
        count: int = 0,
        lease_ms: int | None = None,
        start: bool = True,
        claim_after_refusal: bool = True,
    ) -> Settled:
        """Record many completions and claim up to ``count`` tasks of ``types``, all in one
        round trip and one script: a busy worker's whole exchange with the queue.

        A refused completion (stale lease, cancelled task) is reported in ``outcomes`` and does
        not stop the others, nor the claim unless ``claim_after_refusal`` is false (then a
        refused completion claims nothing)."""
        keys, args = self._settle_call(
            completions, types, worker_id, count, lease_ms, start=start, refusal=claim_after_refusal
        )
        return self._settled(completions, self._recorded("complete_claim", keys, args))

    def settle_line(self) -> ScriptLine | None:
        """A connection for :meth:`send_settle` to write on; None where a settle cannot be
        written ahead of its reply (the embedded store, a cluster, ``wait_replicas``)."""
        if self.settings.wait_replicas:
            return None
        return self.scripts.line()

    def send_settle(
        self,
        line: ScriptLine | None,
        completions: Sequence[tuple[str, int, TaskResult | EncodedResult | None]],
        types: Sequence[str] = (),
        *,
        worker_id: str = "",
        count: int = 0,
        lease_ms: int | None = None,
    ) -> PendingSettle:
        """:meth:`settle`, written on ``line`` now and answered later: Redis runs it while the
        caller works on, and :meth:`PendingSettle.result` reads what it did. Without a line
        it is a plain :meth:`settle`, made here."""
        if line is None:
            return PendingSettle(self, completions, None, self.settle(
                completions, types, worker_id=worker_id, count=count, lease_ms=lease_ms
            ))  # fmt: skip
        keys, args = self._settle_call(completions, types, worker_id, count, lease_ms)
        return PendingSettle(self, completions, line.write("complete_claim", keys, args))

    def _settle_call(
        self,
        completions: Sequence[tuple[str, int, TaskResult | EncodedResult | None]],
        types: Sequence[str],
        worker_id: str,
        count: int,
        lease_ms: int | None,
        *,
        start: bool = True,
        refusal: bool = True,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the ``complete_claim`` script of :meth:`settle`."""
        queues = _claim_queues(types, worker_id) if count else []
        first = completions[0][0] if completions else "-"
        keys = [
            self.keys.active,
            self.keys.delayed,
            self.keys.paused,
            self.keys.task(first),
            *(self.keys.ready(q) for q in queues),
        ]
        args: list[Any] = [
            *self._claim_args(worker_id, count, lease_ms, start),
            "1" if refusal else "0",
            len(completions),
        ]
        for task_id, token, result in completions:
            encoded = result if isinstance(result, EncodedResult) else EncodedResult.of(result)
            args += [task_id, token, encoded.json, encoded.cost]
        return keys, args

    def _settled(
        self,
        completions: Sequence[tuple[str, int, TaskResult | EncodedResult | None]],
        reply: list[Any],
    ) -> Settled:
        """What the reply of a ``complete_claim`` script says it did."""
        n = int(reply[0])
        outcomes: list[int | ShimError] = []
        for (task_id, token, _), code, detail in zip(
            completions, reply[1 : 2 * n + 1 : 2], reply[2 : 2 * n + 2 : 2], strict=True
        ):
            try:
                raise_for_code(code, task_id, token=token, detail=str(detail))
                outcomes.append(int(detail) if code == 1 else 0)
            except ShimError as exc:
                outcomes.append(exc)
        return Settled(
            outcomes=outcomes,
            claims=self._claims(reply, 2 * n + 2),
            next_due_ms=int(reply[2 * n + 1]),
        )

    @redis_errors
    def start(self, task_id: str, token: int) -> None:
        """Move a claimed task to running (publishes ``task:started``)."""
        reply = self.scripts.call(
            "start", [self.keys.task(task_id)], [self.keys.prefix, task_id, token]
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))

    @redis_errors
    def progress(
        self,
        task_id: str,
        token: int,
        fraction: float,
        message: str = "",
        *,
        lease_ms: int | None = None,
    ) -> None:
        """Record progress (0..1), extend the lease and publish ``task:progress``."""
        if not 0.0 <= fraction <= 1.0:
            raise ValidationError(f"progress must be between 0 and 1, got {fraction!r}")
        reply = self.scripts.call(
            "progress",
            [self.keys.task(task_id), self.keys.active],
            [
                self.keys.prefix,
                task_id,
                token,
                repr(float(fraction)),
                message,
                lease_ms or self.settings.lease_ms,
            ],
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))

    @redis_errors
    def extend(self, leases: Sequence[tuple[str, int]], lease_ms: int | None = None) -> list[str]:
        """Renew many leases in one round trip; returns the ids whose lease is lost."""
        if not leases:
            return []
        args: list[Any] = [self.keys.prefix, lease_ms or self.settings.lease_ms]
        for task_id, token in leases:
            args += [task_id, token]
        return list(self.scripts.call("extend", [self.keys.active], args))

    # -------------------------------------------------------------- finishing
    @redis_errors
    def complete(self, task_id: str, token: int, result: TaskResult | None = None) -> int:
        """Record success; returns how many waiting dependents became claimable.

        Raises StaleLease if ``token`` is not the current lease (another worker owns the task
        now), InvalidTransition if the task is no longer active (cancelled, reaped and failed).
        Repeating the call with the same lease after it succeeded is harmless.
        """
        result = result or TaskResult(success=True)
        reply = self._recorded(
            "complete",
            [self.keys.task(task_id), self.keys.waiting],
            [self.keys.prefix, task_id, token, result_json(result), _cost(result)],
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))
        return int(reply[1]) if reply[0] == 1 else 0

    def _recorded(self, verb: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that records results; with ``wait_replicas`` set, also wait (same
        write) until that many replicas hold its writes, so that an acknowledged completion
        survives a failover. Too few in time: logged and counted in ``unreplicated``."""
        replicas = self.settings.wait_replicas
        if not replicas or self.connection.is_embedded:
            return self.scripts.call(verb, keys, args)
        timeout = self.settings.wait_timeout_ms
        reply, acked = self.scripts.call_replicated(verb, keys, args, replicas, timeout)
        if acked < replicas:
            self.unreplicated += 1
            log.warning(
                "results recorded on the master but held by %d of %d replica(s) after %d ms: "
                "a failover now could lose them",
                acked,
                replicas,
                timeout,
            )
        return reply

    @redis_errors
    def complete_many(self, completions: Sequence[tuple[str, int, TaskResult | None]]) -> int:
        """Complete several tasks in one round trip and one script (e.g. after a batch claim);
        returns how many dependents became claimable. Raises the error of the first refused
        completion, after every other completion in the batch has been recorded (see
        :meth:`settle` to get every outcome)."""
        if not completions:
            return 0
        settled = self.settle(completions)
        for outcome in settled.outcomes:
            if isinstance(outcome, ShimError):
                raise outcome
        return sum(o for o in settled.outcomes if isinstance(o, int))

    @redis_errors
    def fail(
        self, task_id: str, token: int, error: str | TaskResult, *, permanent: bool = False
    ) -> FailOutcome:
        """Record a failed execution: retry after exponential backoff while attempts are left
        (``backoff_ms * 2**(attempt-1)``, stretched by up to ``backoff_jitter``), else fail for
        good and cancel the dependents. ``permanent`` skips the retries."""
        result = error if isinstance(error, TaskResult) else TaskResult(success=False, error=error)
        jitter = random.random() * self.settings.backoff_jitter
        reply = self.scripts.call(
            "fail",
            [self.keys.task(task_id), self.keys.delayed],
            [
                self.keys.prefix,
                task_id,
                token,
                result_json(result),
                repr(jitter),
                "1" if permanent else "0",
                _cost(result),
            ],
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))
        if reply[0] == 1:
            return FailOutcome(final=False, due_at=from_ms(reply[1]))
        if reply[0] == 0:  # recorded already by this lease: report the state it is in
            task = self.get(task_id)
            due = task.due_at if task is not None and reply[1] == "retrying" else None
            return FailOutcome(final=reply[1] == "failed", due_at=due)
        return FailOutcome(final=True, cancelled_dependents=int(reply[1]))

    @redis_errors
    def throttle(
        self,
        task_id: str,
        token: int,
        agent: str,
        result: TaskResult,
        *,
        cooldown_ms: int | None = None,
    ) -> datetime:
        """An execution hit ``agent``'s rate limit: the agent cools down fleet-wide until
        ``result.retry_at_ms`` (else for ``cooldown_ms``, default the ``rate_limit_cooldown_ms``
        setting; never longer than a day), and the task waits in retrying until then without
        spending an attempt. Returns the cooldown's end."""
        reset = "" if result.retry_at_ms is None else str(int(result.retry_at_ms))
        reply = self.scripts.call(
            "throttle",
            [self.keys.task(task_id), self.keys.delayed, self.keys.cooldowns],
            [
                self.keys.prefix,
                task_id,
                token,
                check_name("agent", agent),
                reset,
                int(cooldown_ms or self.settings.rate_limit_cooldown_ms),
                MAX_COOLDOWN_MS,
                result_json(result),
                _cost(result),
            ],
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))
        if reply[0] == 0:
            task = self.get(task_id)
            return task.due_at if task is not None and task.due_at else from_ms(0)
        return from_ms(reply[1])

    @redis_errors
    def cooldowns(self) -> dict[str, datetime]:
        """Agents cooling down after a rate limit, with the end of each cooldown (server time)."""
        raw = self.client.hgetall(self.keys.cooldowns)
        now_ms = server_ms(self.client)
        return {agent: from_ms(end) for agent, end in raw.items() if int(float(end)) > now_ms}

    @redis_errors
    def cancel(self, task_id: str, reason: str = "cancelled") -> int:
        """Cancel an unfinished task and its dependents; returns the dependents cancelled."""
        reply = self.scripts.call(
            "cancel", [self.keys.task(task_id)], [self.keys.prefix, task_id, reason]
        )
        raise_for_code(reply[0], task_id, detail=_status_detail(reply))
        return int(reply[1]) if reply[0] == 1 else 0

    @redis_errors
    def release(self, task_id: str, token: int) -> None:
        """Hand an unfinished task back (e.g. on shutdown): pending at once, no stall counted."""
        reply = self.scripts.call(
            "release", [self.keys.task(task_id)], [self.keys.prefix, task_id, token]
        )
        raise_for_code(reply[0], task_id, token=token, detail=_status_detail(reply))

    @redis_errors
    def reassign(self, task_id: str, worker_id: str | None = None) -> None:
        """Give a pending or active task to ``worker_id`` (None: to any worker). An active task's
        lease is voided, so its current worker's result will be refused."""
        reply = self.scripts.call(
            "reassign", [self.keys.task(task_id)], [self.keys.prefix, task_id, worker_id or ""]
        )
        raise_for_code(reply[0], task_id, detail=_status_detail(reply))

    @redis_errors
    def retry(self, task_id: str) -> TaskStatus:
        """Run a failed or cancelled task again; returns its new status (pending or waiting)."""
        reply = self.scripts.call("retry", [self.keys.task(task_id)], [self.keys.prefix, task_id])
        raise_for_code(reply[0], task_id, detail=_status_detail(reply))
        return TaskStatus(reply[1])

    @redis_errors
    def duration_history(self) -> dict[str, float]:
        """Average measured duration in seconds of a completed task, per type."""
        raw = self.client.hgetall(self.keys.history)
        out: dict[str, float] = {}
        for field, value in raw.items():
            task_type, _, kind = field.rpartition(":")
            if kind == "n" and int(value):
                out[task_type] = int(raw.get(f"{task_type}:ms", 0)) / int(value) / 1000
        return out

    @redis_errors
    def reap_stalled(self, limit: int = 100) -> dict[str, TaskStatus]:
        """Return tasks whose lease expired to pending (or fail them past ``max_stalled``).

        Idempotent and safe to run from every process at once. Returns id -> new status.
        """
        reply = self.scripts.call("reap", [self.keys.active], [self.keys.prefix, limit])
        return {reply[i]: TaskStatus(reply[i + 1]) for i in range(0, len(reply), 2)}

    # ---------------------------------------------------------- queue control
    @redis_errors
    def pause(self) -> None:
        """Stop all claims in the namespace (running tasks go on)."""
        self.client.set(self.keys.paused, "1")

    @redis_errors
    def resume(self) -> None:
        """Allow claims again and wake every blocked claimer that has work."""
        self.scripts.call("resume", [self.keys.paused, self.keys.queues], [self.keys.prefix])

    @redis_errors
    def is_paused(self) -> bool:
        return bool(self.client.exists(self.keys.paused))

    def drain(self) -> int:
        """Delete all tasks that has not started (pending, waiting, retrying); return the count."""
        return self._remove("drain", [])

    def clean(self, grace_ms: int | None = None, statuses: Sequence[str] = _FINISHED) -> int:
        """Remove finished tasks older than ``grace_ms`` (default: the retention setting)."""
        bad = set(statuses) - set(_FINISHED)
        if bad:
            raise ValidationError(f"clean takes finished statuses only, not {sorted(bad)}")
        grace = self.settings.retention_ms if grace_ms is None else grace_ms
        return self._remove("clean", [grace, *statuses])

    @redis_errors
    def _remove(self, mode: str, extra: list[Any]) -> int:
        keys = [self.keys.queues, self.keys.waiting, self.keys.delayed]
        removed = 0
        while True:
            n = int(
                self.scripts.call("remove", keys, [self.keys.prefix, mode, REMOVE_CHUNK, *extra])
            )
            removed += n
            if n < REMOVE_CHUNK:
                return removed

    # ------------------------------------------------------------------- runs
    @redis_errors
    def run_fields(self, run_id: str) -> dict[str, str]:
        """The stored record of run ``run_id`` (empty when there is none)."""
        return dict(self.client.hgetall(self.keys.run(run_id)))

    @redis_errors
    def update_run(self, run_id: str, fields: Mapping[str, str]) -> None:
        """Change fields of an existing run record."""
        self.client.hset(self.keys.run(run_id), mapping=dict(fields))

    @redis_errors
    def latest_run_id(self) -> str | None:
        """The run submitted last, if any."""
        newest = self.client.zrange(self.keys.runs, -1, -1)
        return str(newest[0]) if newest else None

    @redis_errors
    def run_ids(self, limit: int = 50) -> list[str]:
        """The ids of the ``limit`` runs submitted last, newest first."""
        return [str(r) for r in self.client.zrange(self.keys.runs, 0, limit - 1, desc=True)]

    # --------------------------------------------------------- queues and leases
    @redis_errors
    def queued_ids(self, queue: str) -> list[str]:
        """The pending tasks of ready queue ``queue`` (a type, or ``@<worker>``), in claim order."""
        return list(self.client.zrange(self.keys.ready(queue), 0, -1))

    @redis_errors
    def queued_count(self, queue: str) -> int:
        """How many tasks are pending in ready queue ``queue``."""
        return int(self.client.zcard(self.keys.ready(queue)))

    @redis_errors
    def holders(self) -> dict[str, str]:
        """Task id -> worker id of every leased task (two round trips)."""
        active = list(self.client.zrange(self.keys.active, 0, -1))
        pipe = self.client.pipeline(transaction=False)
        for task_id in active:
            pipe.hget(self.keys.task(task_id), "worker_id")
        return {t: w for t, w in zip(active, pipe.execute(), strict=True) if w}

    @redis_errors
    def check_lease(self, task_id: str, token: int) -> None:
        """Raise (StaleLease, InvalidTransition, TaskNotFound) unless ``token`` is the current
        lease of an active task."""
        reply = self.scripts.call("lease", [self.keys.task(task_id)], [token])
        raise_for_code(
            reply[0], task_id, token=token, detail=str(reply[1]) if len(reply) > 1 else ""
        )

    @redis_errors
    def append_log(self, task_id: str, lines: Sequence[str], keep: int) -> None:
        """Append lines to a task's log, keeping its last ``keep`` (one round trip)."""
        key = self.keys.log(task_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, *lines)
        pipe.ltrim(key, -keep, -1)
        pipe.execute()

    @redis_errors
    def log_tail(self, task_id: str, lines: int = 200) -> list[str]:
        """The last ``lines`` lines of a task's log, oldest first."""
        return [str(line) for line in self.client.lrange(self.keys.log(task_id), -lines, -1)]

    @redis_errors
    def take_reaper_lock(self, ms: int) -> bool:
        """Take the namespace's reaper lock for ``ms`` unless another process holds it: one
        reaper pass per interval, whatever the size of the fleet."""
        return bool(self.client.set(self.keys.reaper_lock, "1", nx=True, px=ms))

    # -------------------------------------------------------------- statistics
    @redis_errors
    def stats(self) -> QueueStats:
        """Counts by type and status (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.counts)
        pipe.exists(self.keys.paused)
        counts, paused = pipe.execute()
        by_type: dict[str, dict[str, int]] = {}
        for field, value in counts.items():
            status, _, task_type = field.partition(":")
            if status != EVENT_TOTALS and int(value):
                by_type.setdefault(task_type, {})[status] = int(value)
        return QueueStats(by_type=by_type, paused=bool(paused))

    def waiting_count(self) -> int:
        """Tasks not claimed yet: waiting on dependencies, pending or in retry backoff."""
        s = self.stats()
        return s.waiting + s.pending + s.delayed

    def active_count(self) -> int:
        return self.stats().active


def _check_task_id(task_id: object) -> None:
    """ValidationError unless ``task_id`` is a string that can name a task (and its key)."""
    if type(task_id) is not str or not _TASK_ID.match(task_id):
        raise ValidationError(
            f"invalid task id {task_id!r}: use 1-200 letters, digits, '_', '.', ':' or '-'"
        )


def _unstorable(task_id: str, exc: Exception) -> ValidationError:
    """The error for a task whose fields neither json nor the converter can encode."""
    return ValidationError(f"task {task_id!r} cannot be stored: {exc}")


def _agent_of(task: Task) -> str | None:
    """The agent provider of a task: set explicitly, or ``params.agent`` of an ``agent`` task."""
    agent = task.agent
    if agent is None and task.executor == "agent":
        named = task.params.get("agent")
        agent = named if isinstance(named, str) else None
    if agent is None:
        return None
    try:
        return check_name("agent", agent)
    except ConfigError as exc:
        raise ValidationError(f"task {task.id!r}: {exc}") from None


def _cost(result: TaskResult | None) -> str:
    """The cost ARGV of a script: the result's cost in USD, '' for none."""
    cost = None if result is None else result.cost_usd
    return repr(float(cost)) if cost is not None and math.isfinite(cost) and cost >= 0 else ""


def _block_slice(client: Any) -> float:
    """MAX_BLOCK_SLICE, or less where the connections' socket timeout is shorter (a URL's
    ``socket_timeout`` option): each wait ends well before a read would time out."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    timeout = kwargs.get("socket_timeout", MAX_BLOCK_SLICE + 1)
    if not isinstance(timeout, int | float) or timeout <= 0:  # None: reads never time out
        return MAX_BLOCK_SLICE
    return max(0.05, min(MAX_BLOCK_SLICE, timeout * 0.8))


def _claim_queues(types: Sequence[str], worker_id: str) -> list[str]:
    # Each queue once: a queue named twice would offer its head task twice to one claim.
    queues = list(dict.fromkeys([*types, *([f"@{worker_id}"] if worker_id else [])]))
    if not queues:
        raise ConfigError("a claim needs at least one task type or a worker id")
    return queues


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _status_detail(reply: list[Any]) -> str:
    return str(reply[1]) if len(reply) > 1 and reply[0] == ErrorCode.WRONG_STATE else ""


__all__ = [
    "EVENT_TOTALS",
    "FINAL_STATUSES",
    "EncodedResult",
    "FailOutcome",
    "QueueStats",
    "Settled",
    "TaskQueue",
    "TaskState",
]
