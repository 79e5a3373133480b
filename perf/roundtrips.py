"""Count Redis round trips and server-side commands per SHIM task lifecycle step.

Client side: the connection class of the queue's redis-py pool is wrapped so that each call of
``send_packed_command`` counts one round trip (a pipeline sends all its commands in one call, so
it counts 1; redis-py's ``SCRIPT EXISTS`` check before a pipeline that holds scripts counts as its
own round trip, because it is one).

Server side: ``INFO commandstats`` is read before and after each step from a separate client; the
delta of ``calls`` summed over every command (except the INFO itself) is the number of commands
Redis executed, so a script counts as one EVALSHA plus every ``redis.call`` inside it.

Run: ``PYTHONPATH=. python perf/roundtrips.py`` (under 30 s).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import redis
from _server import add_server_args, describe, purge, redis_url

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.keys import Keys
from shim_core.models import Task
from shim_core.queue import TaskQueue

TYPE = "bench"
T = TypeVar("T")


class RoundTripCounter:
    """Counts ``send_packed_command`` calls on every connection of one redis-py pool."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def install(self, client: redis.Redis) -> None:
        """Swap the pool's connection class for a counting subclass and drop old connections."""
        pool: Any = client.connection_pool
        counter = self
        base = pool.connection_class

        class CountingConnection(base):  # type: ignore[misc, valid-type]
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                with counter._lock:
                    counter.count += 1
                super().send_packed_command(command, check_health)

        pool.connection_class = CountingConnection
        pool.disconnect()
        pool.reset()


@attrs.frozen
class Row:
    step: str
    per: int  # tasks the step covers (figures are divided by it)
    round_trips: float
    commands: float
    top: str  # most frequent server-side commands


class Meter:
    """Runs one step and reports its client round trips and server-side commands."""

    def __init__(self, counter: RoundTripCounter, probe: redis.Redis) -> None:
        self.counter = counter
        self.probe = probe
        self.rows: list[Row] = []

    def _commandstats(self) -> Counter[str]:
        stats = self.probe.info("commandstats")
        out: Counter[str] = Counter()
        for name, fields in stats.items():
            cmd = name.removeprefix("cmdstat_")
            if cmd != "info":
                out[cmd] = int(fields["calls"])
        return out

    def measure(self, step: str, action: Callable[[], T], per: int = 1) -> T:
        before_stats = self._commandstats()
        before_rt = self.counter.count
        result = action()
        rt = self.counter.count - before_rt
        delta = self._commandstats() - before_stats
        total = sum(delta.values())
        top = ", ".join(f"{cmd} {n / per:g}" for cmd, n in delta.most_common(6))
        self.rows.append(Row(step, per, rt / per, total / per, top))
        return result


def tasks(n: int, tag: str) -> list[Task]:
    return [Task(id=f"{tag}-{i}", type=TYPE, title="noop") for i in range(n)]


def run(url: str) -> list[Row]:
    namespace = f"rt{int(time.time() * 1000) % 10**8}"
    settings = Settings(redis_url=url, namespace=namespace, backoff_ms=60_000)
    manager = RedisConnectionManager(url)
    queue = TaskQueue(manager, settings)
    probe = redis.Redis.from_url(url, decode_responses=True)
    counter = RoundTripCounter()
    counter.install(queue.client)
    meter = Meter(counter, probe)
    try:
        _warm_up(queue)
        _lifecycle(queue, meter)
    finally:
        purge(probe, Keys(namespace).prefix + "*")
        probe.close()
        manager.disconnect()
    return meter.rows


def _warm_up(queue: TaskQueue) -> None:
    """Load every script and open the pool's connections so no step pays for either."""
    queue.add_many(tasks(3, "warm"))
    claims = queue.claim([TYPE], count=3)
    queue.progress(claims[0].task.id, claims[0].token, 0.5)
    queue.extend([(c.task.id, c.token) for c in claims])
    queue.complete(claims[0].task.id, claims[0].token)
    queue.fail(claims[1].task.id, claims[1].token, "warm-up")
    queue.fail(claims[2].task.id, claims[2].token, "warm-up", permanent=True)
    queue.add_many(tasks(ADD_BIG, "warm-big"))
    held = queue.claim([TYPE], count=1, start=False)
    queue.start(held[0].task.id, held[0].token)
    queue.drain()


ADD_BATCH = 1000
ADD_BIG = 2500  # more than one add chunk (1,000): an existence check pipeline comes first
SETTLE_BATCH = 50


def _lifecycle(queue: TaskQueue, meter: Meter) -> None:
    m = meter.measure
    single = Task(id="single", type=TYPE, title="noop")
    m("add (single task)", lambda: queue.add(single))
    m(
        f"add_many ({ADD_BATCH:,} tasks), per task",
        lambda: queue.add_many(tasks(ADD_BATCH, "batch")),
        per=ADD_BATCH,
    )
    m(
        f"add_many ({ADD_BIG:,} tasks), per task",
        lambda: queue.add_many(tasks(ADD_BIG, "big")),
        per=ADD_BIG,
    )

    claims = m("claim count=1", lambda: queue.claim([TYPE], count=1))
    one = claims[0]
    m("progress", lambda: queue.progress(one.task.id, one.token, 0.5, "half"))
    m("extend (1 lease)", lambda: queue.extend([(one.task.id, one.token)]))
    m("complete", lambda: queue.complete(one.task.id, one.token))

    batch = m("claim count=10, per task", lambda: queue.claim([TYPE], count=10), per=10)
    leases = [(c.task.id, c.token) for c in batch]
    m("extend (10 leases, one heartbeat), per lease", lambda: queue.extend(leases), per=10)
    first, second, third = batch[0], batch[1], batch[2]
    m("fail (retry scheduled)", lambda: queue.fail(first.task.id, first.token, "boom"))
    m("fail (permanent)", lambda: queue.fail(second.task.id, second.token, "boom", permanent=True))
    m("complete (after batch claim)", lambda: queue.complete(third.task.id, third.token))
    queue.add_many(tasks(3, "chain"))
    warm = queue.claim([TYPE], count=1)[0]  # loads the script, outside the count
    _, (head,) = queue.complete_and_claim(warm.task.id, warm.token, None, [TYPE])
    m(
        "complete_and_claim (a busy worker: finish one, take the next)",
        lambda: queue.complete_and_claim(head.task.id, head.token, None, [TYPE]),
    )

    # A busy worker's feed: everything that finished during its last call is recorded, and the
    # next tasks claimed, in one settle call.
    queue.add_many(tasks(2 * SETTLE_BATCH, "settle"))
    running = queue.claim([TYPE], count=SETTLE_BATCH)
    m(
        f"settle: {SETTLE_BATCH} completions + claim {SETTLE_BATCH} (a busy worker), per task",
        lambda: queue.settle(
            [(c.task.id, c.token, None) for c in running], [TYPE], count=SETTLE_BATCH
        ),
        per=SETTLE_BATCH,
    )
    m(
        f"add_many + settle per task, {SETTLE_BATCH} at a time (enqueue, claim, complete)",
        lambda: _batched_lifecycle(queue, tasks(SETTLE_BATCH, "life")),
        per=SETTLE_BATCH,
    )

    held = m("claim count=1 start=False", lambda: queue.claim([TYPE], count=1, start=False))
    m("start", lambda: queue.start(held[0].task.id, held[0].token))

    queue.drain()
    m("claim on an empty queue (no block)", lambda: queue.claim([TYPE], count=1))
    m(
        "claim block=0.2 s, empty queue, stale wake marker left by earlier adds",
        lambda: queue.claim([TYPE], count=1, block=0.2),
    )
    m(
        "claim block=0.2 s, empty queue, no wake marker (times out)",
        lambda: queue.claim([TYPE], count=1, block=0.2),
    )
    _blocked_claim(queue, meter)


def _batched_lifecycle(queue: TaskQueue, batch: list[Task]) -> None:
    """Whole lives of a batch of tasks the way a busy worker runs them: one add_many, one
    settle that claims them, one settle that completes them."""
    queue.add_many(batch)
    claimed = queue.settle([], [TYPE], count=len(batch)).claims
    queue.settle([(c.task.id, c.token, None) for c in claimed], [TYPE])


def _blocked_claim(queue: TaskQueue, meter: Meter) -> None:
    """A claimer already blocked in BZPOPMIN when the task arrives (the adder runs on a second
    client, so only the claimer's round trips are counted)."""
    other = RedisConnectionManager(queue.settings.redis_url)
    adder = TaskQueue(other, queue.settings)

    def later() -> None:
        time.sleep(0.1)
        adder.add(Task(id="arrives", type=TYPE, title="noop"))

    try:
        thread = threading.Thread(target=later)
        thread.start()
        meter.measure(
            "claim block=5 s, task arrives while blocked (server cmds include the add)",
            lambda: queue.claim([TYPE], count=1, block=5.0),
        )
        thread.join()
    finally:
        other.disconnect()


def _lifecycle_total(rows: list[Row]) -> Row:
    pick = {r.step: r for r in rows}
    names = ["add (single task)", "claim count=1", "complete"]
    return Row(
        "single task: add + claim + complete",
        1,
        sum(pick[n].round_trips for n in names),
        sum(pick[n].commands for n in names),
        "",
    )


def render(rows: list[Row]) -> str:
    rows = [*rows, _lifecycle_total(rows)]
    width = max(len(r.step) for r in rows)
    lines = [
        f"{'step':<{width}}  {'round trips':>11}  {'server cmds':>11}  top server commands",
        f"{'-' * width}  {'-' * 11}  {'-' * 11}  {'-' * 19}",
    ]
    lines += [
        f"{r.step:<{width}}  {r.round_trips:>11.3g}  {r.commands:>11.4g}  {r.top}" for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with redis_url(args.redis_url, args.redis_server) as url:
        print(describe(url))
        rows = run(url)
    print(render(rows))
    print(
        f"\n(client round trips counted per send_packed_command; server commands from "
        f"INFO commandstats; {time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
