"""What the dashboard costs to open and to watch: start time, page load, event-to-screen latency
and its memory, with one run of ``--tasks`` tasks (default 5,000), all on loopback.

1. Start: a real ``python -m shim_core.cli dashboard`` process against a private redis-server (or
   ``--redis-url``) holding one submitted run of ``--tasks`` simulated tasks (waves of 100, each
   task depending on one of the wave before); the clock runs from just before ``Popen`` to the
   first 200 answer of the page (``/``).
2. Run data: the time and size of ``GET /api/runs/RUN`` (every task's row).
3. Page load, in headless Debian Chromium (Playwright, ``/usr/bin/chromium``): the run's page is
   loaded ``--loads`` times; for each, navigation start to DOMContentLoaded, and to the first
   full render (the live stream's snapshot drawn: every task's node in the DAG), from the
   page's own clock (``performance.now()``). Medians and the worst are printed.
4. Event to screen: ``--samples`` times, a pending task is claimed and then completed through
   ``TaskQueue`` (as a worker would); the clock runs from just before each queue call to the
   moment the page's DOM shows the node's new status (a MutationObserver stamps it with
   ``Date.now()``: one clock, one machine). p50, p95 and the worst are printed.
5. Memory: the dashboard process's RSS (``/proc/PID/status``) after start, and after the loads
   and the latency samples (one page connected, the run served many times).

Run: ``PYTHONPATH=. python perf/dashboard.py [--tasks 5000] [--loads 5] [--samples 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from _server import add_server_args, describe, free_port, redis_url

from shim_core import RedisConnectionManager, Settings, TaskQueue, TaskResult
from shim_core.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
WAVE = 100

#: Stamps, per task node, when its ``data-status`` became what the benchmark waits for.
OBSERVER = """(want) => {
  window.__seen = {};
  new MutationObserver((changes) => {
    for (const c of changes) {
      const id = c.target.dataset.id, status = c.target.dataset.status;
      if (id && want[id] === status && !window.__seen[id]) window.__seen[id] = Date.now();
    }
  }).observe(document.querySelector("svg.dag"), {subtree: true, attributeFilter: ["data-status"]});
}"""


def submit_run(url: str, namespace: str, tasks: int) -> str:
    """Submit a plan of ``tasks`` simulated tasks; returns the run id."""
    plan = {
        "name": f"perf-{tasks}",
        "defaults": {"executor": "sim"},
        "tasks": [
            {
                "id": f"t{i}",
                "title": f"task {i}",
                **({"deps": [f"t{i - WAVE}"]} if i >= WAVE else {}),
            }
            for i in range(tasks)
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(plan, f)
    settings = Settings.load(redis_url=url, namespace=namespace)
    connection = RedisConnectionManager.for_settings(settings)
    with Supervisor(connection, settings) as supervisor:
        run = supervisor.submit(supervisor.decompose(f.name))
    os.unlink(f.name)
    return run.run_id


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_dashboard(url: str, namespace: str, port: int) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SHIM_DASHBOARD_TOKEN", None)
    command = [sys.executable, "-m", "shim_core.cli", "dashboard", "--redis", url]
    command += ["--namespace", namespace, "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                if r.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            if process.poll() is not None or time.perf_counter() - started > 30:
                raise SystemExit("the dashboard did not start") from None
            time.sleep(0.005)


def page_loads(page: Any, address: str, tasks: int, loads: int) -> list[tuple[float, float]]:
    """(DOMContentLoaded, full render) in ms for each load of the run's page."""
    drawn = f"() => document.querySelectorAll('svg.dag [data-id]').length === {tasks}"
    found = []
    for _ in range(loads):
        page.goto("about:blank")
        page.goto(address, wait_until="commit")
        page.wait_for_function(drawn, polling="raf", timeout=60_000)
        rendered = page.evaluate("() => performance.now()")
        dom = page.evaluate(
            "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
        )
        found.append((dom, rendered))
    return found


def latencies(page: Any, queue: TaskQueue, run_id: str, samples: int) -> list[float]:
    """ms from a queue call to the DOM showing its result, for a claim and a complete each."""
    found: list[float] = []
    for i in range(samples):
        task_id = f"{run_id}:t{i}"
        page.evaluate(OBSERVER, {f"t{i}": "running"})
        queue.reassign(task_id, "perf")
        sent = time.time() * 1000
        (claim,) = queue.claim([], worker_id="perf", count=1)
        found.append(_seen(page, f"t{i}") - sent)
        page.evaluate(OBSERVER, {f"t{i}": "complete"})
        sent = time.time() * 1000
        queue.complete(claim.task.id, claim.token, TaskResult(success=True))
        found.append(_seen(page, f"t{i}") - sent)
    return found


def _seen(page: Any, plan_id: str) -> float:
    page.wait_for_function(f"() => window.__seen['{plan_id}']", polling="raf")
    return float(page.evaluate(f"() => window.__seen['{plan_id}']"))


def fetch_run(port: int, run_id: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs/{run_id}", timeout=60) as r:
        size = len(r.read())
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", metavar="FILE", help="Also write the figures as JSON.")
    add_server_args(parser)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with redis_url(args.redis_url, args.redis_server) as url:
        print(describe(url))
        namespace = f"perf-dash-{os.getpid()}"
        run_id = submit_run(url, namespace, args.tasks)
        port = free_port()
        process, start_s = start_dashboard(url, namespace, port)
        figures: dict[str, Any] = {"tasks": args.tasks, "start_s": start_s}
        try:
            figures["rss_start_mib"] = rss_mib(process.pid)
            figures["run_json_s"], figures["run_json_bytes"] = fetch_run(port, run_id)
            settings = Settings.load(redis_url=url, namespace=namespace)
            queue = TaskQueue(RedisConnectionManager.for_settings(settings), settings)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
                address = f"http://127.0.0.1:{port}/#/run/{run_id}"
                loads = page_loads(page, address, args.tasks, args.loads)
                figures["load_dom_ms"] = [round(d, 1) for d, _ in loads]
                figures["load_render_ms"] = [round(r, 1) for _, r in loads]
                figures["event_to_screen_ms"] = latencies(page, queue, run_id, args.samples)
                figures["rss_after_mib"] = rss_mib(process.pid)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=10)
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def report(f: dict[str, Any]) -> None:
    lat = sorted(f["event_to_screen_ms"])
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
    dom, full = f["load_dom_ms"], f["load_render_ms"]
    rows = [
        ("start to first answer", f"{f['start_s'] * 1000:.0f} ms"),
        ("GET /api/runs/RUN", f"{f['run_json_s'] * 1000:.0f} ms, {f['run_json_bytes']:,} bytes"),
        ("page: DOMContentLoaded", f"median {statistics.median(dom):.0f} ms, worst {max(dom):.0f}"),
        (
            "page: full render",
            f"median {statistics.median(full):.0f} ms, worst {max(full):.0f}",
        ),
        (
            f"event to screen ({len(lat)})",
            f"p50 {statistics.median(lat):.0f} ms, p95 {p95:.0f}, worst {max(lat):.0f}",
        ),
        ("dashboard RSS", f"{f['rss_start_mib']:.1f} MiB at start, {f['rss_after_mib']:.1f} after"),
    ]
    print(f"a run of {f['tasks']} tasks")
    for name, value in rows:
        print(f"  {name:<26} {value}")


if __name__ == "__main__":
    main()
