"""SHIM's pytest plugin (entry point ``pytest11: shim``): real Redis fixtures for any project.

Fixtures: ``shim_redis_url``, ``shim_settings``, ``shim_connection``, ``shim_queue``, ``shim_bus``,
``shim_redis_server_factory``, ``shim_real_redis``, ``shim_fleet``, ``shim_fleet_factory``
(``pytest --shim-workers=N``). Marker: ``shim_real_redis``.

The names below are imported lazily, so that loading the plugin does not import SHIM before
pytest-cov starts measuring.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Fleet": "pytest_shim.fleet",
    "FleetWorker": "pytest_shim.fleet",
    "RedisServer": "pytest_shim.server",
    "find_redis_server": "pytest_shim.server",
    "free_port": "pytest_shim.server",
    "delete_namespace": "pytest_shim.fixtures",
}

__all__ = [
    "Fleet",
    "FleetWorker",
    "RedisServer",
    "delete_namespace",
    "find_redis_server",
    "free_port",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pytest_shim' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
