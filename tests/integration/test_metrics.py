"""Prometheus metrics: the namespace's, read from Redis on each scrape (``shim metrics``, the
ASGI app), and a worker process's own (``shim worker --metrics-port``)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from shim_core.cli import app, main
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, forget_embedded
from shim_core.doctor import check_invariants
from shim_core.errors import ShimError
from shim_core.metrics import NamespaceCollector, metrics_asgi_app, render
from shim_core.metrics.worker import WorkerMetrics
from shim_core.models import Claim, Task, TaskResult, WorkerRegistration
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.worker import Worker, WorkerConfig
from tests.helpers import run_perf_script, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value; the text must parse."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def value(scrape: Samples, name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


def workload(queue: TaskQueue, client: Any) -> None:
    """Type x: 3 completed, 1 failed, 2 pending; type y: 1 retried then reaped; an agent task
    rate limited; a run whose agent spent $0.25; one registered worker."""
    queue.add_run(
        "r1",
        {"name": "costly"},
        [Task(id="paid", type="z", run_id="r1", executor="agent", params={"agent": "claude"})],
    )
    queue.add_many([Task(id=f"x{i}", type="x", max_attempts=1) for i in range(6)])
    queue.add_many([Task(id="y", type="y", max_attempts=3, backoff_ms=0)])
    claims = queue.claim(["x"], worker_id="", count=4)
    for claim in claims[:3]:
        queue.complete(claim.task.id, claim.token, TaskResult(success=True))
    queue.fail(claims[3].task.id, claims[3].token, "boom")
    (y,) = queue.claim(["y"], worker_id="", count=1)
    queue.fail("y", y.token, "flaky")  # retried, due at once
    (y,) = queue.claim(["y"], worker_id="", count=1, lease_ms=1)
    wait_until(queue.reap_stalled)  # its lease lapsed: reaped
    (paid,) = queue.claim(["z"], worker_id="", count=1)
    queue.complete("paid", paid.token, TaskResult(success=True, cost_usd=0.25))
    queue.add(Task(id="limited", type="z", executor="agent", params={"agent": "codex"}))
    (limited,) = queue.claim(["z"], worker_id="", count=1)
    queue.throttle("limited", limited.token, "codex", TaskResult(success=False), cooldown_ms=60_000)


@pytest.fixture
def registry(shim_connection: RedisConnectionManager, shim_settings: Settings) -> WorkerRegistry:
    return WorkerRegistry(shim_connection, shim_settings)


def test_a_scrape_reports_the_namespace_after_a_known_workload(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    shim_queue: TaskQueue,
    registry: WorkerRegistry,
) -> None:
    """Depth by type and status, the event totals, durations, latency, workers, cost and
    cooldowns are right; every name starts with shim_; doctor and stats ignore the totals."""
    workload(shim_queue, shim_queue.client)
    registry.register_worker(WorkerRegistration(id="w1"), heartbeat_interval=5)

    text = render(shim_connection, shim_settings)
    scrape = samples(text)

    assert all(name.startswith("shim_") for name, _ in scrape)
    assert value(scrape, "shim_up") == 1
    assert value(scrape, "shim_tasks", type="x", status="complete") == 3
    assert value(scrape, "shim_tasks", type="x", status="failed") == 1
    assert value(scrape, "shim_tasks", type="x", status="pending") == 2
    assert value(scrape, "shim_tasks", type="y", status="pending") == 1
    assert value(scrape, "shim_tasks", type="z", status="retrying") == 1
    assert value(scrape, "shim_tasks_completed_total", type="x") == 3
    assert value(scrape, "shim_task_duration_seconds_count", type="x") == 3
    assert value(scrape, "shim_task_duration_seconds_sum", type="x") >= 0
    assert value(scrape, "shim_tasks_started_total") == 8  # 4 x, 2 y, 2 z
    assert value(scrape, "shim_tasks_failed_total") == 1
    assert value(scrape, "shim_tasks_retried_total") == 2  # y's failure, the rate limit
    assert value(scrape, "shim_tasks_reaped_total") == 1
    assert value(scrape, "shim_tasks_released_total") == 1  # y promoted out of its backoff
    assert 0 <= value(scrape, "shim_queue_latency_seconds", queue="x") < 60
    assert value(scrape, "shim_queue_latency_seconds", queue="z") == 0  # empty
    assert value(scrape, "shim_workers", status="idle") == 1
    assert value(scrape, "shim_workers", status="crashed") == 0
    assert 0 <= value(scrape, "shim_heartbeat_age_seconds", worker="w1") < 5
    assert value(scrape, "shim_agent_cost_usd") == pytest.approx(0.25)
    assert 55 < value(scrape, "shim_agent_cooldown_seconds", agent="codex") <= 60
    assert value(scrape, "shim_queue_paused") == 0
    assert value(scrape, "shim_metrics_invalid_values") == 0
    assert check_invariants(shim_queue.client, shim_queue.keys) == []
    assert set(shim_queue.stats().by_type) == {"x", "y", "z"}


def test_hostile_data_in_redis_does_not_break_a_scrape(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """Non-numeric counts, unknown statuses, garbage timestamps and keys of the wrong type are
    skipped and counted; the readable values are still reported."""
    shim_queue.add_many([Task(id="ok", type="x")])
    client, keys = shim_queue.client, shim_queue.keys
    client.hset(keys.counts, mapping={"pending:y": "lots", "zombie:x": "1", "event:": "2"})
    client.hset(keys.counts, "event:started", "{}")
    client.hset(keys.history, mapping={"x:n": "NaN", "y:n": "2", "y:ms": "3000"})
    client.hset(keys.cooldowns, mapping={"claude": "soon", "codex": "inf"})
    client.hset(keys.task("ok"), "ready_at", "yesterday")
    client.sadd(keys.queues, "gone")
    client.set(keys.ready("gone"), "not a zset")
    client.sadd(keys.worker_ids, "w-bad", "w-odd", "w-gone")
    client.hset(keys.worker("w-bad"), mapping={"status": "zombie", "last_seen": "x"})
    client.hset(keys.worker("w-odd"), mapping={"status": "busy", "last_seen": "[]"})
    client.zadd(keys.runs, {"r-bad": 1, "r-str": 2})
    client.hset(keys.run("r-bad"), "cost_usd", "free")
    client.set(keys.run("r-str"), "not a hash")

    scrape = samples(render(shim_connection, shim_settings))

    assert value(scrape, "shim_up") == 1
    assert value(scrape, "shim_tasks", type="x", status="pending") == 1
    assert value(scrape, "shim_task_duration_seconds_count", type="y") == 2
    assert value(scrape, "shim_workers", status="busy") == 1
    assert value(scrape, "shim_agent_cost_usd") == 0
    assert ("shim_agent_cooldown_seconds", (("agent", "claude"),)) not in scrape
    assert value(scrape, "shim_metrics_invalid_values") >= 12

    client.set(keys.counts, "a string")  # a key of the wrong type
    assert value(samples(render(shim_connection, shim_settings)), "shim_up") == 1


def test_an_unreachable_redis_reads_as_shim_up_0(shim_settings: Settings) -> None:
    """A scrape while Redis is away answers shim_up 0 instead of failing."""
    connection = RedisConnectionManager(f"redis://127.0.0.1:{free_port()}/0", retries=0)
    families = list(NamespaceCollector(connection, shim_settings).collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("shim_up", 0.0)]


def asgi_get(app: Any) -> tuple[int, str]:
    """GET /metrics from an ASGI app: the status and the body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"].decode()


def test_the_asgi_app_serves_the_text_format(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """metrics_asgi_app answers a GET with 200 and the namespace's metrics (read in a worker
    thread), shim_up 0 when Redis is away, and ignores the lifespan protocol."""
    shim_queue.add(Task(id="a", type="x"))
    status, body = asgi_get(metrics_asgi_app(shim_connection, shim_settings))
    assert status == 200
    assert value(samples(body), "shim_tasks", type="x", status="pending") == 1

    away = RedisConnectionManager(f"redis://127.0.0.1:{free_port()}/0", retries=0)
    status, body = asgi_get(metrics_asgi_app(away, shim_settings))
    assert (status, value(samples(body), "shim_up")) == (200, 0)

    async def never(*_args: Any) -> Any:
        raise AssertionError("a lifespan scope is not answered")

    asyncio.run(metrics_asgi_app(away, shim_settings)({"type": "lifespan"}, never, never))


def test_shim_metrics_once_prints_the_text(
    shim_settings: Settings, shim_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`shim metrics --once` prints the metrics of the namespace it is given."""
    monkeypatch.delenv("SHIM_REDIS_URL", raising=False)
    shim_queue.add(Task(id="a", type="x"))
    args = ["--redis", shim_settings.redis_url, "--namespace", shim_settings.namespace]
    result = CliRunner().invoke(app, ["metrics", *args, "--once"])
    assert result.exit_code == 0, result.output
    assert value(samples(result.stdout), "shim_tasks", type="x", status="pending") == 1


def test_shim_metrics_on_an_address_it_cannot_bind_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An address that cannot be bound is one line and exit code 2, not a traceback."""
    try:
        with pytest.raises(SystemExit) as unbound:
            main(["metrics", "--redis", "embedded://metrics-test", "--host", "192.0.2.1"])
    finally:
        forget_embedded("metrics-test")
    assert unbound.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: cannot serve metrics on 192.0.2.1:9464")


def _start(args: list[str], log: Path, pattern: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m shim_core.cli ARGS``; returns it and the URL its log announces."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shim_core.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    found = wait_until(lambda: re.search(pattern, log.read_text()) or process.poll(), timeout=20)
    assert isinstance(found, re.Match), log.read_text()
    return process, found.group(1)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_exporter_answers_http_on_loopback_until_a_signal(
    shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """`shim metrics --port N` serves /metrics on loopback until SIGTERM, then exits 0."""
    shim_queue.add(Task(id="a", type="x"))
    port = free_port()
    scraped: list[str] = []

    def scrape_then_stop() -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            scraped.append(wait_until(lambda: _get(url), timeout=10))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=scrape_then_stop)
    thread.start()
    args = ["--redis", shim_settings.redis_url, "--namespace", shim_settings.namespace]
    result = CliRunner().invoke(app, ["metrics", *args, "--port", str(port)])
    thread.join()
    assert result.exit_code == 0, result.output
    assert f"at http://127.0.0.1:{port}/metrics" in result.output
    assert value(samples(scraped[0]), "shim_tasks", type="x", status="pending") == 1


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


@pytest.mark.shim_real_redis
def test_a_worker_with_metrics_port_exposes_its_own_counters(
    shim_settings: Settings, shim_queue: TaskQueue, tmp_path: Path
) -> None:
    """`shim worker --metrics-port 0` counts the tasks it ran by type and outcome, their
    durations, its claims' latency and its heartbeat age."""
    args = ["worker", "--redis", shim_settings.redis_url, "--namespace", shim_settings.namespace]
    args += ["--default-executor", "sim", "--heartbeat", "1.0", "--metrics-port", "0"]
    process, url = _start(args, tmp_path / "worker.log", r"metrics at (http://\S+)")
    try:
        shim_queue.add_many(
            [
                Task(id="ok1", type="code"),
                Task(id="ok2", type="code"),
                Task(id="bad", type="test", max_attempts=1, params={"fail_first": 1}),
            ]
        )
        wait_until(lambda: shim_queue.stats().complete + shim_queue.stats().failed == 3)

        def counted() -> Samples | None:
            """A scrape that counts all three (the worker counts a task just after Redis
            has recorded it, so the first scrape may come a moment early)."""
            with urllib.request.urlopen(url, timeout=10) as response:
                scrape = samples(response.read().decode())
            outcomes = [k for k in scrape if k[0] == "shim_worker_tasks_total"]
            return scrape if sum(scrape[k] for k in outcomes) == 3 else None

        scrape = wait_until(counted)
    finally:
        assert _stop(process) == 0
    assert value(scrape, "shim_worker_tasks_total", type="code", outcome="complete") == 2
    assert value(scrape, "shim_worker_tasks_total", type="test", outcome="failed") == 1
    assert value(scrape, "shim_worker_task_duration_seconds_count", type="code") == 2
    assert value(scrape, "shim_worker_claim_latency_seconds_count") == 3
    assert 0 <= value(scrape, "shim_worker_heartbeat_age_seconds") < 5


def test_a_worker_without_metrics_does_not_import_prometheus_client() -> None:
    """The worker's modules never load prometheus_client unless --metrics-port is given."""
    code = (
        "import sys, shim_core.cli.fleet, shim_core.worker, shim_core.local;"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "False"


def test_worker_metrics_count_agent_spending_and_ignore_odd_output() -> None:
    """Cost and tokens reported by an agent are counted per agent; output of another shape is
    ignored; claims are observed when they carry when the task became claimable."""
    metrics = WorkerMetrics()
    task = Task(id="t", type="code")
    usage = {"agent": "claude", "tokens": {"input": 120, "output": 30, "cached": 5}}
    metrics.finished(task, "complete", 1500, TaskResult(success=True, output=usage, cost_usd=0.5))
    for output in ({"agent": 7}, {"agent": "claude", "tokens": [1]}, ["list"], None):
        metrics.finished(task, "failed", 10, TaskResult(success=False, output=output))
    metrics.finished(task, "complete", 10, TaskResult(success=True, output={"agent": "x"}))
    metrics.claimed([Claim(task=task, token=1)])  # no timestamps: not observed
    ready = datetime(2026, 1, 1, tzinfo=UTC)
    waited = attrs.evolve(task, claimed_at=ready + timedelta(seconds=2))
    ready_ms = str(int(ready.timestamp() * 1000))
    metrics.claimed([Claim(task=waited, token=2, ready_at_ms=ready_ms)])
    metrics.claimed([Claim(task=waited, token=3, ready_at_ms=bad) for bad in ("soon", "nan")])
    metrics.watch_heartbeat(SimpleNamespace(last_beat=time.monotonic() - 3))

    registry = metrics.registry
    assert registry.get_sample_value("shim_worker_agent_cost_usd_total", {"agent": "claude"}) == 0.5
    tokens = {"agent": "claude", "kind": "input"}
    assert registry.get_sample_value("shim_worker_agent_tokens_total", tokens) == 120
    assert (
        registry.get_sample_value("shim_worker_tasks_total", {"type": "code", "outcome": "failed"})
        == 4
    )
    assert registry.get_sample_value("shim_worker_claim_latency_seconds_count") == 1
    assert registry.get_sample_value("shim_worker_claim_latency_seconds_sum") == 2
    assert 3 <= (registry.get_sample_value("shim_worker_heartbeat_age_seconds") or 0) < 60
    metrics.close()  # never served: nothing to stop


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_the_scrape_benchmark_runs() -> None:
    """perf/metrics_scrape.py runs end to end on a tiny namespace (its figures: perf/README.md)."""
    args = ["metrics_scrape.py", "--tasks", "40", "--workers", "2", "--runs", "2", "--scrapes", "3"]
    done = run_perf_script(args, 60)
    assert done.returncode == 0, done.stderr
    assert "40 tasks, 5 types, 2 workers, 2 runs: one scrape" in done.stdout


def test_an_in_process_worker_tells_its_observers(
    shim_connection: RedisConnectionManager, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """A Worker's observers hear of its claims and of each outcome, with the task."""
    metrics = WorkerMetrics()
    config = WorkerConfig(default_executor="sim", heartbeat_interval=0.2, claim_block=0.1)
    worker = Worker(shim_connection, shim_settings, config, observers=[metrics])
    worker.start()
    try:
        shim_queue.add_many(
            [Task(id="ok", type="code"), Task(id="bad", type="test", params={"fail_first": 9})]
        )
        done = {"type": "code", "outcome": "complete"}
        failed = {"type": "test", "outcome": "retrying"}
        wait_until(lambda: metrics.registry.get_sample_value("shim_worker_tasks_total", done))
        wait_until(lambda: metrics.registry.get_sample_value("shim_worker_tasks_total", failed))
    finally:
        worker.stop(grace=1)
    assert (metrics.registry.get_sample_value("shim_worker_claim_latency_seconds_count") or 0) >= 2


def test_each_attempt_becomes_a_span_with_the_task_and_its_outcome() -> None:
    """With OpenTelemetry installed, TaskSpans records one span per execution: the run's time,
    the task's attributes, ERROR for a failed attempt."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from shim_core.metrics.tracing import TaskSpans

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = TaskSpans("w1", tracer_provider=provider)
    ok = Task(id="ok", type="code", run_id="r1", executor="sim", attempts=1)
    spans.claimed([Claim(task=ok, token=1)])
    spans.finished(ok, "complete", 1500, TaskResult(success=True))
    spans.finished(Task(id="bad", type="test", attempts=2), "retrying", 10)

    good, bad = exporter.get_finished_spans()
    assert good.name == "shim.task code"
    assert dict(good.attributes or {}) == {
        "shim.task.id": "ok",
        "shim.task.type": "code",
        "shim.task.attempt": 1,
        "shim.worker.id": "w1",
        "shim.outcome": "complete",
        "shim.run.id": "r1",
        "shim.executor": "sim",
    }
    assert (good.end_time or 0) - (good.start_time or 0) == 1_500_000_000
    assert good.status.status_code is StatusCode.UNSET
    assert (bad.status.status_code, bad.status.description) == (StatusCode.ERROR, "retrying")


def test_the_worker_command_builds_the_observers_it_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--metrics-port starts the metrics server (a port already taken is a one-line error),
    --otel adds the spans, and --otel without OpenTelemetry installed is a one-line error."""
    pytest.importorskip("opentelemetry.trace")
    from shim_core.cli.fleet import _observers
    from shim_core.metrics.tracing import TaskSpans

    assert _observers("w1", None, "127.0.0.1", otel=False) == ([], None)
    observers, metrics = _observers("w1", 0, "127.0.0.1", otel=True)
    try:
        assert [type(o) for o in observers] == [WorkerMetrics, TaskSpans]
        port = re.search(r"http://127.0.0.1:(\d+)/metrics", capsys.readouterr().err)
        assert port is not None
        with pytest.raises(ShimError, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            _observers("w2", int(port.group(1)), "127.0.0.1", otel=False)  # the port is taken
    finally:
        metrics.close()
    monkeypatch.setitem(sys.modules, "shim_core.metrics.tracing", None)
    with pytest.raises(ShimError, match=r"pip install 'shim\[otel\]'"):
        _observers("w1", None, "127.0.0.1", otel=True)
