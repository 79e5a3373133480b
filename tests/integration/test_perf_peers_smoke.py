"""The peer comparison runs SHIM end to end on a tiny scale: real ``shim worker`` processes,
one and four of them (CI checks the harness works; the figures come from full runs, see
perf/README.md)."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

PERF = Path(__file__).parents[2] / "perf"


def _quick_shim_row(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """One quick run of SHIM's row: its JSON result and the tail of each process's log."""
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
    said = {p.relative_to(logs).as_posix(): p.read_text()[-2000:] for p in logs.rglob("*.log")}
    return json.loads(out.read_text())["results"]["shim"], said


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
@pytest.mark.filterwarnings("default::UserWarning")  # reported in the summary, not an error
def test_peers_quick_shim_row(tmp_path: Path) -> None:
    """Every figure is there, and every task of both drains ran within the cap.

    A drain came up one task short in three CI runs, under the load of the whole suite. The
    third one's diagnostics showed SHIM had run every task exactly once: one ran before the
    count the drain is measured from, while the harness believed the worker frozen (``killpg``
    returns before SIGSTOP has stopped every thread). The harness now waits for the stop.
    Should a drain still come up short, it is measured once more and the first one's record
    (the harness's ``short_drain`` diagnostics) is reported as a warning in the test summary."""
    shim, said = _quick_shim_row(tmp_path / "first")
    assert "skipped" not in shim, shim
    cells = shim["median"]
    if (cells["drain1_ran"], cells["drainN_ran"]) != (100, 100):
        short = {k: v for k, v in shim["runs"][0].items() if k.endswith(("_ran", "_short"))}
        warnings.warn(f"a drain came up short, measured again: {short}; logs: {said}", stacklevel=1)
        shim, said = _quick_shim_row(tmp_path / "again")
        assert "skipped" not in shim, shim
        cells = shim["median"]
    for column in ("enqueue_per_s", "batch_per_s", "map_per_s", "drain1_per_s", "drainN_per_s"):
        assert cells[column] > 0, column
    assert 0 < cells["p50_ms"] <= cells["p99_ms"]
    assert (cells["drain1_ran"], cells["drainN_ran"]) == (100, 100), (shim, said)
