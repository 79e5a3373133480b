"""Smoke test of perf/agents.py: the benchmark runs at its smallest settings and reports
positive numbers (the timings themselves are not checked)."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "perf" / "agents.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("perf_agents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs classes look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def run_main(bench, tmp_path, *args):
    out = tmp_path / "out.json"
    assert bench.main(["-n", "1", "--warmup", "0", "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def check_rows(report, expected):
    rows = report["rows"]
    assert len(rows) == expected
    for row in rows:
        assert row["n"] == 1
        assert len(row["samples_ms"]) == 1
        if "overhead" not in row["what"]:  # a difference may come out negative
            assert row["min_ms"] > 0
            assert row["median_ms"] >= row["min_ms"]
            assert row["max_ms"] >= row["median_ms"]
    assert report["machine"]["nproc"] >= 1
    assert len(report["machine"]["loadavg_before"]) == 3
    assert report["table"].count("\n") == expected + 1


def test_worktree_part_on_a_small_repository(bench, tmp_path, capsys):
    report = run_main(bench, tmp_path, "--parts", "worktree", "--files", "50", "--folders", "5")
    check_rows(report, expected=6)
    assert report["settings"] == {"n": 1, "warmup": 0, "files": 50, "folders": 5}
    assert "| worktree prepare (50-file repo) |" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed")
def test_spawn_part_with_claude(bench, tmp_path):
    report = run_main(bench, tmp_path, "--parts", "spawn", "--agents", "claude")
    check_rows(report, expected=4)
    assert report["rows"][0]["what"] == "claude: Popen → first request (raw)"
