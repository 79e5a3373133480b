"""The worker soak benchmark runs end to end on a tiny scale (CI checks it works; the figures
come from full runs, see perf/README.md)."""

import json
import shutil

import pytest

from tests.helpers import run_perf_script


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_worker_soak_smoke(tmp_path):
    out = tmp_path / "soak.json"
    done = run_perf_script(
        ["worker_soak.py", "--tasks", "300", "--step", "100", "--json", str(out)], 120
    )
    assert done.returncode == 0, done.stderr
    steps = json.loads(out.read_text())["steps"]
    assert [s["upto"] for s in steps] == [100, 200, 300]
    assert all(s["rate"] > 0 and s["rss_kib"] > 0 for s in steps)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_concurrency_benchmark_smoke(tmp_path):
    out = tmp_path / "conc.json"
    done = run_perf_script(
        ["concurrency.py", "--tasks", "40", "--sleep", "0.005", "--concurrency", "1,4",
         "--json", str(out)],
        120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert all(r["tasks_per_s"] > 0 for r in rows)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_redis_memory_benchmark_smoke():
    done = run_perf_script(["redis_memory.py", "--tasks", "50"], 120)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[2:] if line.strip()]
    assert rows[-4:] == ["empty", "50", "50", "after"]


@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("valgrind") is None,
    reason="needs redis-server and valgrind",
)
def test_server_cost_benchmark_smoke(tmp_path):
    """Counting redis-server's instructions per task works end to end, a real worker included."""
    out = tmp_path / "cost.json"
    done = run_perf_script(
        ["server_cost.py", "--adds", "5", "--batch", "20", "--drain", "30", "--json", str(out)],
        300,
    )
    assert done.returncode == 0, done.stderr
    phases = json.loads(out.read_text())["phases"]
    assert list(phases) == ["add", "add_many", "add_many_deps", "add_map", "drain"]
    assert all(p["per_task"] > 0 for p in phases.values())
    assert phases["add"]["commands"]["evalsha"] == 5
    assert phases["add_map"]["commands"]["evalsha"] == 1
    assert phases["drain"]["commands"]["hgetall"] >= 30


@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("valgrind") is None,
    reason="needs redis-server and valgrind",
)
def test_client_cost_benchmark_smoke(tmp_path):
    """Counting the client's instructions per call works end to end (one phase: each costs two
    Python start-ups under cachegrind)."""
    out = tmp_path / "client.json"
    done = run_perf_script(
        ["client_cost.py", "--phases", "decode", "--count", "20", "--json", str(out)], 300
    )
    assert done.returncode == 0, done.stderr
    per_call = json.loads(out.read_text())["per_call"]
    assert list(per_call) == ["decode"]
    assert per_call["decode"] > 0
