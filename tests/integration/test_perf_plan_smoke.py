"""perf/plan_submit.py (a large plan read, checked and enqueued) and perf/worker_startup.py (how
long ``shim worker`` takes to join) run end to end on a tiny scale. CI checks that they work and
report figures; no timing is asserted here (the figures come from full runs).

Run alone: ``.venv/bin/python -m pytest tests/integration/test_perf_plan_smoke.py -n 0 --no-cov
-q`` (about 40 s on two busy cores).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_perf_script

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs a redis-server binary"
)


def test_plan_submit_smoke(tmp_path: Path) -> None:
    """A 200-task plan is decomposed and submitted (every task enqueued), twice, and the
    `shim plan` / `shim submit` commands run on it; the figures are printed and written."""
    out = tmp_path / "plan.json"
    done = run_perf_script(
        ["plan_submit.py", "--tasks", "200", "--repeat", "2", "--cli", "--json", str(out)], 180
    )

    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["tasks"] == 200
    assert figures["enqueued"] == [200, 200]
    assert figures["waves"] >= 2
    assert len(figures["decompose_s"]) == len(figures["submit_s"]) == 2
    assert all(s > 0 for s in [*figures["decompose_s"], *figures["submit_s"]])
    assert figures["shim_plan_s"] > 0
    assert figures["shim_submit_s"] > 0
    for label in ("decompose", "submit", "shim plan", "shim submit"):
        assert label in done.stdout


def test_worker_startup_smoke(tmp_path: Path) -> None:
    """Real `shim worker` processes join (each start timed) and the import costs are listed."""
    out = tmp_path / "startup.json"
    done = run_perf_script(
        ["worker_startup.py", "--runs", "2", "--top", "5", "--json", str(out)], 180
    )

    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert len(figures["ready_s"]) == 2
    assert all(s > 0 for s in figures["ready_s"])
    assert figures["min_s"] <= figures["median_s"]
    for key in ("worker_imports", "help_imports"):
        costs = figures[key]
        assert costs["modules"] > 0
        assert costs["total_ms"] > 0
        assert 0 < len(costs["packages_ms"]) <= 5
        assert costs["cumulative_ms"]
    assert "shim worker ready: median" in done.stdout


def test_worker_startup_beside_huey(tmp_path: Path) -> None:
    """`--huey` starts huey's consumer after each worker and prints the ratio; without the peer
    virtualenv (`perf/peers.py --setup`, which CI does not run) it says what to run, and starts
    nothing."""
    out = tmp_path / "startup.json"
    args = ["worker_startup.py", "--runs", "1", "--top", "1", "--huey", "--json", str(out)]
    done = run_perf_script(args, 180)
    consumer = Path(__file__).parents[2] / "perf" / ".peers" / "huey" / "bin" / "huey_consumer"
    if not consumer.exists():
        assert done.returncode == 2
        assert "--huey needs" in done.stderr
        assert "perf/peers.py --setup" in done.stderr
        assert not out.exists()
        return
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert len(figures["huey_ready_s"]) == 1
    assert figures["huey_ready_s"][0] > 0
    assert "SHIM / huey: " in done.stdout
