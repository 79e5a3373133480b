"""Prometheus metrics of SHIM, every name prefixed ``shim_``.

* The namespace's metrics, read from Redis on each scrape (nothing kept between scrapes):
  :func:`metrics_asgi_app` for a web app to mount at ``/metrics``, :func:`render` for the text,
  :class:`NamespaceCollector` for a registry of one's own; ``shim metrics`` serves them alone.
* A worker process's own metrics: :class:`~shim_core.metrics.worker.WorkerMetrics`
  (``shim worker --metrics-port N``).

Importing this package imports ``prometheus_client``; nothing else in SHIM imports it.
"""

from shim_core.metrics._collector import (
    NamespaceCollector,
    metrics_asgi_app,
    namespace_registry,
    render,
)
from shim_core.metrics._snapshot import Snapshot, SnapshotReader

__all__ = [
    "NamespaceCollector",
    "Snapshot",
    "SnapshotReader",
    "metrics_asgi_app",
    "namespace_registry",
    "render",
]
