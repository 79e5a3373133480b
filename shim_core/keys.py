"""Every Redis key and channel name of a SHIM namespace, built in one place.

All keys carry the hash tag ``{ns}`` so that the multi-key Lua scripts of one namespace run on one
Redis Cluster slot. Lua scripts that discover keys while running (a completed task's dependents, a
type's ready queue) build them from :attr:`Keys.prefix` with the same suffixes as below; the
``lua/_lib.lua`` helpers mirror these functions and the tests check the two agree.
"""

from __future__ import annotations

import re

import attrs

from shim_core.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid namespace / type / worker name, else raise ConfigError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"invalid {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


@attrs.frozen
class Keys:
    """Key builder for one namespace: ``Keys("default").task("t1") == "shim:{default}:task:t1"``."""

    namespace: str = attrs.field(validator=lambda _i, _a, v: check_name("namespace", v))

    @property
    def prefix(self) -> str:
        return f"shim:{{{self.namespace}}}:"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def pattern(self, rest: str = "*") -> str:
        """SCAN pattern of the namespace's keys matching ``rest`` (the prefix's braces escaped,
        glob would read them as a set)."""
        return self.prefix.replace("{", "\\{").replace("}", "\\}") + rest

    def task_pattern(self) -> str:
        """SCAN pattern matching every task hash of the namespace."""
        return self.pattern("task:*")

    def ready(self, queue: str) -> str:
        """Pending tasks of one queue: a task type, or ``@<worker>`` for targeted tasks."""
        return f"{self.prefix}ready:{queue}"

    def wake(self, queue: str) -> str:
        """Marker zset a blocked claimer waits on (BZPOPMIN) for ``queue``."""
        return f"{self.prefix}wake:{queue}"

    def dependents(self, task_id: str) -> str:
        return f"{self.prefix}dependents:{task_id}"

    def ckpt(self, task_id: str) -> str:
        return f"{self.prefix}ckpt:{task_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    @property
    def waiting(self) -> str:
        return f"{self.prefix}waiting"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def active(self) -> str:
        return f"{self.prefix}active"

    @property
    def complete(self) -> str:
        return f"{self.prefix}complete"

    @property
    def failed(self) -> str:
        return f"{self.prefix}failed"

    @property
    def cancelled(self) -> str:
        return f"{self.prefix}cancelled"

    @property
    def queues(self) -> str:
        """Set of every queue name (type or ``@worker``) that has ever held a task."""
        return f"{self.prefix}queues"

    @property
    def counts(self) -> str:
        """Hash ``<status>:<type>`` -> number of tasks, kept by the scripts on every transition."""
        return f"{self.prefix}counts"

    @property
    def history(self) -> str:
        """Hash ``<type>:n`` / ``<type>:ms``: completed tasks and their total duration, per type."""
        return f"{self.prefix}history"

    @property
    def runs(self) -> str:
        """Zset of run ids by submission time."""
        return f"{self.prefix}runs"

    @property
    def reaper_lock(self) -> str:
        """Short-lived lock that elects the one process running a reaper pass per interval."""
        return f"{self.prefix}reaper-lock"

    @property
    def cooldowns(self) -> str:
        """Hash agent -> end of its fleet-wide rate-limit cooldown (server ms)."""
        return f"{self.prefix}cooldowns"

    @property
    def paused(self) -> str:
        return f"{self.prefix}paused"

    @property
    def seq(self) -> str:
        return f"{self.prefix}seq"

    @property
    def fence(self) -> str:
        return f"{self.prefix}fence"

    @property
    def workers(self) -> str:
        """Zset of live workers scored by heartbeat deadline (server ms): a crash scan is a
        range query up to now."""
        return f"{self.prefix}workers"

    @property
    def worker_ids(self) -> str:
        """Set of every worker id ever registered (live, crashed or offline)."""
        return f"{self.prefix}worker-ids"

    def alive(self, worker_id: str) -> str:
        """Liveness channel a worker keeps subscribed on its own connection: no subscriber means
        the process is gone (the OS closed its socket)."""
        return f"{self.prefix}alive:{worker_id}"

    def log(self, task_id: str) -> str:
        """Capped list of a task's log lines."""
        return f"{self.prefix}log:{task_id}"

    def events(self) -> str:
        """Capped stream of the namespace's events (heartbeats aside): the durable history that
        readers replay from an entry id, then follow."""
        return f"{self.prefix}events"

    def channel(self, name: str) -> str:
        """Pub/sub channel ``name`` (e.g. ``task:progress``) under the namespace prefix."""
        return f"{self.prefix}{name}"
