"""The invariant checker behind ``shim doctor``.

Invariants (all must hold at every instant, because every transition is one Lua script):

1. every task hash is in exactly one state set, and that set matches its ``status``
   (pending -> ``ready:<its queue>``, waiting -> ``waiting``, claimed/running -> ``active``,
   retrying -> ``delayed``, complete/failed/cancelled -> the set of that name);
2. every member of a state set has a task hash;
3. the ``counts`` hash equals the number of tasks per status and type;
4. an active task holds a lease token; a waiting task has dependencies left;
5. every task hash decodes (a field that does not is named: ``corrupt task data: params ...``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from shim_core.errors import CorruptTask
from shim_core.keys import Keys
from shim_core.models import TaskStatus
from shim_core.queue import EVENT_TOTALS
from shim_core.serde import task_from_hash

_ZSETS = {
    "delayed": "retrying",
    "active": "active",
    "complete": "complete",
    "failed": "failed",
    "cancelled": "cancelled",
}


@attrs.frozen
class Violation:
    task_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.task_id}: {self.problem}"


def check_invariants(client: Any, keys: Keys) -> list[Violation]:
    """Every broken invariant of the namespace (an empty list when all is well)."""
    membership = _memberships(client, keys)
    tasks = _task_fields(client, keys)
    problems: list[Violation] = []
    counted: Counter[str] = Counter()
    for task_id, fields in sorted(tasks.items()):
        status, ttype, assigned = (
            fields.get("status"),
            fields.get("type"),
            fields.get("assigned_to"),
        )
        deps_left, lease = fields.get("deps_left"), fields.get("lease")
        if status is None or status not in TaskStatus._value2member_map_:
            problems.append(Violation(task_id, f"has no valid status ({status!r})"))
            continue
        try:
            task_from_hash(fields, task_id)
        except CorruptTask as exc:
            problems.append(Violation(task_id, f"cannot be decoded: {exc}"))
        counted[f"{status}:{ttype}"] += 1
        expected = _expected_set(status, f"@{assigned}" if assigned else str(ttype))
        found = membership.pop(task_id, [])
        if found != [expected]:
            problems.append(
                Violation(
                    task_id, f"is {status} but in {found or 'no state set'} (expected {expected})"
                )
            )
        if status in ("claimed", "running") and not int(lease or 0):
            problems.append(Violation(task_id, f"is {status} without a lease token"))
        if status == "waiting" and int(deps_left or 0) <= 0:
            problems.append(Violation(task_id, "is waiting with no dependencies left"))
    for task_id, sets in sorted(membership.items()):
        problems.append(Violation(task_id, f"is in {sets} but has no task hash"))
    stored = Counter(
        {
            k: int(v)
            for k, v in client.hgetall(keys.counts).items()
            if int(v) and k.partition(":")[0] != EVENT_TOTALS
        }
    )
    if stored != counted:
        problems.append(Violation("*", f"counts {dict(stored)} != actual {dict(counted)}"))
    return problems


def _expected_set(status: str, queue: str) -> str:
    if status == "pending":
        return f"ready:{queue}"
    if status in ("claimed", "running"):
        return "active"
    return {"retrying": "delayed"}.get(status, status)


def _memberships(client: Any, keys: Keys) -> dict[str, list[str]]:
    queues = sorted(client.smembers(keys.queues))
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.waiting)
    for name in _ZSETS:
        pipe.zrange(f"{keys.prefix}{name}", 0, -1)
    for queue in queues:
        pipe.zrange(keys.ready(queue), 0, -1)
    replies = pipe.execute()
    names = ["waiting", *_ZSETS, *(f"ready:{q}" for q in queues)]
    found: dict[str, list[str]] = {}
    for name, members in zip(names, replies, strict=True):
        for task_id in members:
            found.setdefault(task_id, []).append(name)
    return found


def _task_fields(client: Any, keys: Keys) -> dict[str, dict[str, str]]:
    """Every task hash of the namespace, read 1,000 per round trip."""
    start = len(keys.task(""))
    ids = [k[start:] for k in client.scan_iter(match=keys.task_pattern(), count=1000)]
    found: dict[str, dict[str, str]] = {}
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        pipe = client.pipeline(transaction=False)
        for task_id in chunk:
            pipe.hgetall(keys.task(task_id))
        found.update((t, f) for t, f in zip(chunk, pipe.execute(), strict=True) if f)
    return found
