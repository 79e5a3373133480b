"""The peer comparison runs SHIM end to end on a tiny scale: real ``shim worker`` processes,
one and four of them (CI checks the harness works; the figures come from full runs, see
perf/README.md)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).parents[2] / "perf"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_peers_quick_shim_row(tmp_path):
    out, logs = tmp_path / "peers.json", tmp_path / "logs"
    done = subprocess.run(
        [sys.executable, "peers.py", "--quick", "--only", "shim", "--tasks", "100",
         "--samples", "10", "--timeout", "60", "--json", str(out), "--logs", str(logs)],
        cwd=PERF,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "shim add_many batch" in done.stdout
    shim = json.loads(out.read_text())["results"]["shim"]
    assert "skipped" not in shim, shim
    cells = shim["median"]
    for column in ("enqueue_per_s", "batch_per_s", "drain1_per_s", "drainN_per_s"):
        assert cells[column] > 0, column
    assert 0 < cells["p50_ms"] <= cells["p99_ms"]
    # Every task of each drain ran within the cap; on a failure, say what the processes said.
    said = {p.relative_to(logs).as_posix(): p.read_text()[-2000:] for p in logs.rglob("*.log")}
    assert (cells["drain1_ran"], cells["drainN_ran"]) == (100, 100), (shim, said)
