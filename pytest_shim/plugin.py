"""Entry point of SHIM's pytest plugin (``pytest11: shim``).

pytest imports this module before coverage measurement starts, so it stays tiny: it declares the
options and registers :mod:`pytest_shim.fixtures` (which imports SHIM) at configure time.
"""

from __future__ import annotations

import importlib

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shim", "SHIM test fixtures")
    for name, help_text in (
        ("shim-redis-server", "redis-server binary to start for the tests (default: from PATH)"),
        ("shim-redis-url", "use the Redis server at this URL instead of starting one"),
    ):
        group.addoption(f"--{name}", default=None, help=help_text)
        parser.addini(name.replace("-", "_"), help_text, default=None)
    group.addoption(
        "--shim-workers",
        type=int,
        default=None,
        metavar="N",
        help="workers in the shim_fleet fixture (default 3)",
    )
    parser.addini("shim_workers", "workers in the shim_fleet fixture (default 3)", default="3")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    fixtures = importlib.import_module("pytest_shim.fixtures")
    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "shim-fixtures")
