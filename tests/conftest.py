"""Shared test setup. The Redis fixtures come from SHIM's own pytest plugin (pytest_shim)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from shim_core import cli
from shim_core.config import Settings

pytest_plugins = ["pytester"]

#: ``shim(*args)`` of the :func:`shim` fixture: (exit code, stdout, stderr).
Shim = Callable[..., tuple[int, str, str]]


@pytest.fixture
def shim(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Shim:
    """Run ``shim ARGS`` in-process through ``cli.main`` (no ``SHIM_*`` connection variable of
    the outer environment leaking in); returns (exit code, stdout, stderr)."""
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def target(shim_settings: Settings) -> list[str]:
    """The ``--redis`` / ``--namespace`` options of this test's namespace."""
    return ["--redis", shim_settings.redis_url, "--namespace", shim_settings.namespace]


@pytest.fixture
def terminal_sigint() -> Iterator[None]:
    """SIGINT as a terminal gives it (KeyboardInterrupt here, the default in a child process),
    for the test's duration: a suite started in the background (``... &`` in a script)
    inherits SIGINT ignored, and Python then leaves Ctrl-C ignored too."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
