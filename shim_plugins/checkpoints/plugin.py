"""Registers SHIM's built-in checkpoint backends (entry point ``shim``: ``checkpoints``)."""

from __future__ import annotations

from shim_core.contracts import CheckpointBackendFactory
from shim_core.hookspecs import hookimpl
from shim_plugins.checkpoints.filesystem import FilesystemCheckpointBackendFactory
from shim_plugins.checkpoints.redis_backend import RedisCheckpointBackendFactory


@hookimpl
def shim_checkpoint_backends() -> list[CheckpointBackendFactory]:
    """The built-in backends: ``redis`` (the default) and ``filesystem``."""
    return [RedisCheckpointBackendFactory(), FilesystemCheckpointBackendFactory()]
