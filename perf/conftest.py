"""pytest setup of the benchmarks in perf/ (see pytest.ini): a ``perf_report`` fixture whose lines
are printed in the terminal summary, so the figures show without ``-s``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_LINES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES] = []


@pytest.fixture
def perf_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with one line of figures; it is printed at the end of the session."""
    return request.config.stash[_LINES].append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("SHIM benchmark figures")
        for line in lines:
            terminalreporter.write_line(line)
