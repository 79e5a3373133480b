"""A worker process's own metrics (``shim worker --metrics-port N``): what this process ran, how
long it took, how long its claims had waited, its heartbeat age and its agents' spending.

Only imported when metrics are asked for: a worker without ``--metrics-port`` never loads
``prometheus_client`` and pays nothing per task. With them, each task costs a few counter and
histogram updates (series are made once per task type and outcome, then reused).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from shim_core.errors import ShimError
from shim_core.models import Claim, Task, TaskResult

#: Task durations from a no-op to an agent session of an hour (seconds).
DURATION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
#: Claim latencies from a claimer already waiting (a millisecond) to a backlog of minutes.
LATENCY_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)


class WorkerMetrics:
    """Counters and histograms of one worker process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = Counter(
            "shim_worker_tasks",
            "Executions this worker finished, by task type and outcome (complete, retrying, "
            "failed, throttled, fenced, cancelled).",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "shim_worker_task_duration_seconds",
            "Time this worker spent running each task, by type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.claim_latency = Histogram(
            "shim_worker_claim_latency_seconds",
            "Time a task claimed by this worker had been claimable (server clock).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "shim_worker_agent_cost_usd",
            "USD the agents run by this worker reported spending, by agent.",
            ["agent"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "shim_worker_agent_tokens",
            "Tokens the agents run by this worker reported, by agent and kind (input, output).",
            ["agent", "kind"],
            registry=self.registry,
        )
        self.heartbeat_age = Gauge(
            "shim_worker_heartbeat_age_seconds",
            "Seconds since this worker's last successful heartbeat.",
            registry=self.registry,
        )
        self._server: Any = None

    def watch_heartbeat(self, reporter: Any) -> None:
        """Read the heartbeat age from ``reporter.last_beat`` (monotonic seconds) on scrape."""
        self.heartbeat_age.set_function(lambda: time.monotonic() - reporter.last_beat)

    def claimed(self, claims: Iterable[Claim]) -> None:
        """Observe how long each newly claimed task had been claimable."""
        for claim in claims:
            claimed, raw = claim.task.claimed_at, claim.ready_at_ms
            if claimed is None or raw is None:  # a task queued before SHIM kept ready_at
                continue
            try:
                ready_ms = float(raw)
            except ValueError:  # garbage in the task hash
                continue
            if math.isfinite(ready_ms):
                self.claim_latency.observe(max(claimed.timestamp() - ready_ms / 1000, 0.0))

    def finished(
        self, task: Task, outcome: str, duration_ms: int, result: TaskResult | None = None
    ) -> None:
        """Count one finished execution of ``task`` (and what its agent spent)."""
        self.tasks.labels(task.type, outcome).inc()
        self.duration.labels(task.type).observe(duration_ms / 1000)
        if result is not None and isinstance(result.output, dict):
            self._agent_usage(result.output, result.cost_usd)

    def _agent_usage(self, output: dict[str, Any], cost: float | None) -> None:
        agent = output.get("agent")
        if not isinstance(agent, str):
            return
        if isinstance(cost, int | float) and math.isfinite(cost) and cost > 0:
            self.cost.labels(agent).inc(cost)
        tokens = output.get("tokens")
        if isinstance(tokens, dict):
            for kind in ("input", "output"):
                n = tokens.get(kind)
                if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    self.tokens.labels(agent, kind).inc(n)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a daemon thread; returns
        the port. Raises ShimError when the address cannot be bound."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ShimError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
