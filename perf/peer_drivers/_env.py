"""Settings every driver reads from the environment that ``peers.py`` gives it."""

from __future__ import annotations

import os

#: Redis URL of the shared server.
URL = os.environ.get("SHIM_PEERS_URL", "redis://127.0.0.1:6379/0")
#: Queue (or namespace) name every system uses.
QUEUE = os.environ.get("SHIM_PEERS_QUEUE", "shimperf")
#: Tasks one worker process runs at once, for systems that set it in code.
CONCURRENCY = int(os.environ.get("SHIM_PEERS_CONCURRENCY", "1"))
