"""The namespace's Prometheus collector: each scrape reads the state the scripts keep in Redis
(four round trips, see ``_snapshot.py``) and turns it into metric families. Nothing is kept
between scrapes, so any number of exporters may watch one namespace."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisClusterException

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError
from shim_core.metrics._snapshot import Snapshot, SnapshotReader
from shim_core.models import WorkerStatus

log = logging.getLogger(__name__)

#: Event type counted by the scripts -> (metric name, help).
EVENT_COUNTERS = {
    "started": ("shim_tasks_started", "Task attempts started (claimed to run)."),
    "failed": ("shim_tasks_failed", "Tasks that failed for good (no attempt left)."),
    "retrying": (
        "shim_tasks_retried",
        "Tasks sent back to wait before another attempt (a failed attempt, a rate limit).",
    ),
    "stalled": (
        "shim_tasks_reaped",
        "Tasks whose lease expired (their worker stalled or died), put back in the queue.",
    ),
    "cancelled": ("shim_tasks_cancelled", "Tasks cancelled (by hand, or a dependency failed)."),
    "released": (
        "shim_tasks_released",
        "Tasks made pending again: dependencies done, backoff over, handed back, retried.",
    ),
}


@attrs.frozen
class Scrape:
    """One read of the namespace: its snapshot (None: Redis did not answer) and how long the
    read took."""

    snapshot: Snapshot | None
    seconds: float


#: A read made before prometheus_client asks the collector (see :func:`metrics_asgi_app`).
_PREFETCHED: ContextVar[Scrape | None] = ContextVar("shim_metrics_prefetched", default=None)


class NamespaceCollector(Collector):
    """A ``prometheus_client`` collector for one namespace; reads Redis on each scrape."""

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.namespace = settings.namespace
        self._reader = SnapshotReader(connection, settings)

    def read(self) -> Scrape:
        """Read the namespace now (blocking); a Redis failure is logged and read as None."""
        started = time.perf_counter()
        try:
            snapshot: Snapshot | None = self._reader.read()
        except (ShimError, RedisClusterException) as exc:  # the latter: a cluster without slots
            log.warning("metrics of namespace %r not read: %s", self.namespace, exc)
            snapshot = None
        return Scrape(snapshot, time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape; ``shim_up 0`` alone when Redis cannot be read."""
        scrape = _PREFETCHED.get() or self.read()
        up = "Whether the namespace could be read from Redis."
        if scrape.snapshot is None:
            yield _gauge("shim_up", up, 0)
            return
        yield _gauge("shim_up", up, 1)
        yield from _families(scrape.snapshot)
        yield _gauge(
            "shim_scrape_duration_seconds",
            "Seconds this scrape took to read the namespace from Redis.",
            scrape.seconds,
        )


def _families(s: Snapshot) -> Iterator[Metric]:
    yield _labelled(
        GaugeMetricFamily,
        "shim_tasks",
        "Tasks by type and status (queue depth: waiting, pending, retrying; claimed, running; "
        "complete, failed, cancelled until cleaned).",
        ["type", "status"],
        {key: float(n) for key, n in sorted(s.tasks.items())},
    )
    yield _gauge("shim_queue_paused", "1 while the namespace is paused (no claims).", s.paused)
    yield _labelled(
        CounterMetricFamily,
        "shim_tasks_completed",
        "Tasks completed, by type.",
        ["type"],
        {(t,): float(n) for t, (n, _) in sorted(s.completed.items())},
    )
    duration = SummaryMetricFamily(
        "shim_task_duration_seconds",
        "Time from claim to completion of completed tasks, by type.",
        labels=["type"],
    )
    for task_type, (n, ms) in sorted(s.completed.items()):
        duration.add_metric([task_type], count_value=n, sum_value=ms / 1000)
    yield duration
    for event, (name, doc) in EVENT_COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=s.events.get(event, 0))
    yield _labelled(
        GaugeMetricFamily,
        "shim_queue_latency_seconds",
        "Seconds the next task of each ready queue has been waiting to be claimed (0: empty).",
        ["queue"],
        {(q,): v for q, v in sorted(s.queue_latency.items())},
    )
    workers = dict.fromkeys((w.value for w in WorkerStatus), 0) | s.workers
    yield _labelled(
        GaugeMetricFamily,
        "shim_workers",
        "Registered workers by status.",
        ["status"],
        {(status,): float(n) for status, n in workers.items()},
    )
    yield _labelled(
        GaugeMetricFamily,
        "shim_heartbeat_age_seconds",
        "Seconds since each live worker's last heartbeat.",
        ["worker"],
        {(w,): age for w, age in sorted(s.heartbeat_age.items())},
    )
    yield _gauge(
        "shim_agent_cost_usd",
        "USD the agents reported spending, summed over the newest 1,000 runs still recorded.",
        s.cost_usd,
    )
    yield _labelled(
        GaugeMetricFamily,
        "shim_agent_cooldown_seconds",
        "Seconds left of each agent's fleet-wide rate-limit cooldown (agents cooling down).",
        ["agent"],
        {(a,): v for a, v in sorted(s.cooldowns.items())},
    )
    yield _gauge(
        "shim_metrics_invalid_values",
        "Values in Redis this scrape could not read (not a number, an unknown status...).",
        s.invalid,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _labelled(
    family: Callable[..., Any],
    name: str,
    doc: str,
    labels: list[str],
    values: dict[tuple[str, ...], float],
) -> Metric:
    metric: Any = family(name, doc, labels=labels)
    for label_values, value in values.items():
        metric.add_metric(list(label_values), value)
    return metric  # type: ignore[no-any-return]


def namespace_registry(connection: RedisConnectionManager, settings: Settings) -> CollectorRegistry:
    """A registry of its own holding only the namespace's collector."""
    return _registry(NamespaceCollector(connection, settings))


def _registry(collector: NamespaceCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def metrics_asgi_app(connection: RedisConnectionManager, settings: Settings) -> Any:
    """An ASGI app answering every request with the namespace's metrics, read on each request
    (``prometheus_client.make_asgi_app``: the text or OpenMetrics format, gzip when asked).
    Mount it at ``/metrics``.

    Redis is read in a worker thread before prometheus_client builds the answer from that read,
    so the event loop that serves the app never waits on Redis (nor on its retries when Redis is
    away)."""
    collector = NamespaceCollector(connection, settings)
    exposition = make_asgi_app(_registry(collector))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return
        scrape = await asyncio.get_running_loop().run_in_executor(None, collector.read)
        token = _PREFETCHED.set(scrape)
        try:
            await exposition(scope, receive, send)
        finally:
            _PREFETCHED.reset(token)

    return app


def render(connection: RedisConnectionManager, settings: Settings) -> str:
    """The namespace's metrics now, in the Prometheus text format."""
    return generate_latest(namespace_registry(connection, settings)).decode()
