"""SHIM's built-in checkpoint backends: ``redis`` (the default) and ``filesystem``."""

from shim_plugins.checkpoints.filesystem import (
    FilesystemCheckpointBackend,
    FilesystemCheckpointBackendFactory,
)
from shim_plugins.checkpoints.redis_backend import (
    RedisCheckpointBackend,
    RedisCheckpointBackendFactory,
)

#: The backend used when the settings name none.
DEFAULT_BACKEND = "redis"

__all__ = [
    "DEFAULT_BACKEND",
    "FilesystemCheckpointBackend",
    "FilesystemCheckpointBackendFactory",
    "RedisCheckpointBackend",
    "RedisCheckpointBackendFactory",
]
