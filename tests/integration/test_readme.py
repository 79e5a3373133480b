"""Every Python snippet of README.md runs as written (the first two in one namespace, as a reader
would paste them; the third is a test of SHIM's pytest plugin, run with its fixtures)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_the_readme_has_three_python_snippets() -> None:
    assert len(SNIPPETS) == 3


def test_the_api_snippets_run_on_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The queue snippet, then the supervisor snippet with its in-process workers: the
    README's plan runs to completion."""
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {}
    exec(SNIPPETS[0], namespace)  # the README's own code
    queue = namespace["queue"]
    assert queue.get("model").status.value == "complete"
    exec(SNIPPETS[1], namespace)
    report = namespace["report"]
    assert report.ok
    assert capsys.readouterr().out.split()[-1] == "1.0"  # the progress callback printed


@pytest.mark.shim_real_redis
def test_the_pytest_plugin_snippet_runs(shim_fleet_factory: Any, shim_queue: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(SNIPPETS[2], namespace)
    namespace["test_nothing_is_lost"](shim_fleet_factory, shim_queue)
