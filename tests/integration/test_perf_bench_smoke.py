"""The pyperf hot-path benchmarks and the fleet scalability benchmark run end to end on a tiny
scale. CI checks that they work and report figures; the figures themselves come from full runs
(see perf/README.md), and no timing is asserted here.

Run alone: ``.venv/bin/python -m pytest tests/integration/test_perf_bench_smoke.py -n 0 --no-cov
-q`` (about 30 s; ``-p no:xdist`` does not work here, the repository's addopts pass ``-n 2``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_perf_script

NEW_BENCHMARKS = (
    "heartbeat_1",
    "heartbeat_10",
    "progress_delivery",
    "crash_scan_10k",
    "crash_scan_10k_one",
    "reap_1k",
    "reaper_1k",
    "dag_release_1k",
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs a redis-server binary"
)


def test_bench_queue_new_benchmarks_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_perf_script(
        [
            "bench_queue.py",
            "--debug-single-value",
            "--only",
            ",".join(NEW_BENCHMARKS),
            "--scan-workers",
            "300",
            "-o",
            str(out),
        ],
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in NEW_BENCHMARKS:  # pyperf prints "name: 1.23 ms" per benchmark
        assert re.search(rf"^{name}: [\d.]+ [mun]?s", done.stdout, re.MULTILINE), done.stdout
    suite = json.loads(out.read_text())
    names = {b["metadata"]["name"] for b in suite["benchmarks"]}
    assert names == set(NEW_BENCHMARKS)


def test_scalability_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = run_perf_script(
        [
            "scalability.py",
            "--workers",
            "1,2",
            "--tasks",
            "10",
            "--duration",
            "0.01",
            "--overhead-workers",
            "2",
            "--overhead-repeat",
            "1",
            "--json",
            str(out),
        ],
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== scalability" in done.stdout
    assert "== coordination overhead, 2 workers ==" in done.stdout
    runs = json.loads(out.read_text())["runs"]
    assert {(r["executor"], r["workers"]) for r in runs} == {
        ("python", 1),
        ("python", 2),
        ("sim", 1),
        ("sim", 2),
        ("floor", 1),
        ("floor", 2),
    }
    assert re.search(r"^python: [+-][\d.]+ % beyond the floor$", done.stdout, re.MULTILINE)
    for run in runs:
        assert run["completed"] == 10
        assert run["wall_s"] >= 10 * 0.01 / run["workers"]  # the sleeps alone take that long
        assert (run["commands"] > 0) is (run["executor"] != "floor")
