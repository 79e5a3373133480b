"""A connection states redis-py's version itself (``CLIENT SETINFO``) instead of having redis-py
look it up in the installed packages' metadata for every connection it opens."""

from __future__ import annotations

from importlib import metadata

import pytest
import redis

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager


def test_connections_tell_the_server_the_library_without_reading_metadata(
    shim_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No metadata lookup while connecting; every connection carries ``redis-py`` and its version
    (which a server from Redis 7.2 on records)."""
    looked_up: list[str] = []
    real = metadata.version

    def version(name: str) -> str:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    manager = RedisConnectionManager(shim_settings.redis_url)
    try:
        client = manager.connect()
        other = manager.new_client()
        other.ping()
        info = client.client_info()
        kwargs = getattr(client.connection_pool, "connection_kwargs", {})
        other.close()
    finally:
        manager.disconnect()
    assert looked_up == []
    if hasattr(redis, "DriverInfo") and not manager.is_embedded:
        assert kwargs["driver_info"].name == "redis-py"
        assert kwargs["driver_info"].lib_version == redis.__version__
    if "lib-ver" in info:
        assert (info["lib-name"], info["lib-ver"]) == ("redis-py", redis.__version__)
