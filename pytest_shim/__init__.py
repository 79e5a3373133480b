"""SHIM's pytest plugin (entry point ``pytest11: shim``): real Redis fixtures for any project.

Fixtures: ``shim_redis_url``, ``shim_settings``, ``shim_connection``, ``shim_queue``, ``shim_bus``,
``shim_redis_server_factory``, ``shim_real_redis``. Marker: ``shim_real_redis``.
"""

from pytest_shim.plugin import delete_namespace
from pytest_shim.server import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "delete_namespace", "find_redis_server", "free_port"]
