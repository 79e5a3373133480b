"""The systems ``peers.py`` compares: how each one's workers and producer are started.

Each row of the table is a :class:`System`: the environment it runs in (SHIM's own interpreter,
a peer virtualenv under ``perf/.peers/``, or Node.js), the command that starts one worker process
the way a user starts it (the system's CLI where it has one), and the command that starts its
producer (``perf/peer_drivers/produce.py <app>`` or ``bullmq_node.cjs produce``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peers_setup import node_modules, venv_python

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parent
DRIVERS = PERF_DIR / "peer_drivers"
#: The queue / namespace name every system uses (the db is flushed between systems anyway).
QUEUE = "shimperf"

#: (redis url, worker name) -> argv of one worker process
WorkerCommand = Callable[[str, str], list[str]]


@dataclass(frozen=True)
class System:
    """One row of the table."""

    #: what ``--only`` takes
    key: str
    #: the row's label
    name: str
    #: "shim", "node" or the name of a Python peer's virtualenv
    env: str
    #: module of ``perf/peer_drivers`` the producer imports (unused for Node.js)
    app: str
    #: how one worker process is started
    worker: WorkerCommand
    #: what the worker command means, for the notes under the table
    how: str
    #: tasks one worker process runs at once
    concurrency: int = 1
    #: time a batch enqueue (``send_batch``) as well, as an extra row
    batch: bool = False
    #: time a batch from a template (``send_map``) as well, as an extra row
    mapped: bool = False

    @property
    def is_shim(self) -> bool:
        """SHIM's own rows (the rest are peers)."""
        return self.env == "shim"

    def python(self) -> Path:
        """The interpreter of this system's producer and Python workers."""
        return Path(sys.executable) if self.is_shim else venv_python(self.env)

    def missing(self) -> str | None:
        """Why this system cannot run here, or None."""
        if self.env == "node":
            if shutil.which("node") is None:
                return "node is not on PATH"
            if not (node_modules() / "bullmq").is_dir():
                return f"no {node_modules() / 'bullmq'} (run: python perf/peers.py --setup)"
            return None
        if not self.is_shim and not self.python().exists():
            home = self.python().parent.parent
            return f"no virtualenv at {home} (run: python perf/peers.py --setup)"
        return None

    def producer(self) -> list[str]:
        """argv of this system's producer process."""
        if self.env == "node":
            return ["node", str(DRIVERS / "bullmq_node.cjs"), "produce"]
        return [str(self.python()), str(DRIVERS / "produce.py"), self.app]

    def pythonpath(self) -> str:
        """PYTHONPATH for its processes: the drivers (and the repository for SHIM's task body)."""
        return f"{REPO_ROOT}:{DRIVERS}" if self.is_shim else str(DRIVERS)


def _bin(env: str, script: str) -> str:
    return str(venv_python(env).parent / script)


def _shim_worker(concurrency: int) -> WorkerCommand:
    entry = Path(sys.executable).parent / "shim"
    prefix = [str(entry)] if entry.exists() else [sys.executable, "-m", "shim_core.cli"]
    extra = ["--allow", "python"]
    if concurrency != 1:
        extra += ["--concurrency", str(concurrency)]
    return lambda url, name: [*prefix, "worker", "--redis", url, "--namespace", QUEUE, *extra]


def _dramatiq_worker(threads: int) -> WorkerCommand:
    return lambda url, name: [
        _bin("dramatiq", "dramatiq"), "dramatiq_app", "--processes", "1", "--threads", str(threads)
    ]  # fmt: skip


def _bullmq_node_worker(url: str, name: str) -> list[str]:
    return ["node", str(DRIVERS / "bullmq_node.cjs"), "worker"]


def _table() -> list[System]:
    return [
        System("shim", "shim", "shim", "shim_app", _shim_worker(1),
               "shim worker --redis URL --namespace NS --allow python (concurrency 1)", batch=True,
               mapped=True),
        System("shim-c10", "shim -c 10", "shim", "shim_app", _shim_worker(10),
               "shim worker ... --concurrency 10", concurrency=10),
        System("bullmq-node", "bullmq (node)", "node", "", _bullmq_node_worker,
               "node bullmq_node.cjs worker: new Worker(queue, fn, {concurrency: 1})"),
        System("bullmq-node-c10", "bullmq (node) c10", "node", "", _bullmq_node_worker,
               "same, concurrency: 10", concurrency=10),
        System("bullmq-py", "bullmq (python)", "bullmq", "bullmq_app",
               lambda url, name: [_bin("bullmq", "python"), "bullmq_app.py"],
               "python bullmq_app.py: Worker(queue, fn, {concurrency: 1})"),
        System("huey", "huey", "huey", "huey_app",
               lambda url, name: [_bin("huey", "huey_consumer"), "huey_app.huey"],
               "huey_consumer huey_app.huey (defaults: 1 thread worker)"),
        System("dramatiq", "dramatiq", "dramatiq", "dramatiq_app", _dramatiq_worker(1),
               "dramatiq dramatiq_app --processes 1 --threads 1"),
        System("dramatiq-8t", "dramatiq 8 threads", "dramatiq", "dramatiq_app", _dramatiq_worker(8),
               "dramatiq dramatiq_app --processes 1 --threads 8 (default threads)", concurrency=8),
        System("taskiq", "taskiq", "taskiq", "taskiq_app",
               lambda url, name: [_bin("taskiq", "taskiq"), "worker", "taskiq_app:broker",
                                  "--workers", "1", "--max-async-tasks", "1"],
               "taskiq worker taskiq_app:broker --workers 1 --max-async-tasks 1"
               " (RedisStreamBroker)"),
        System("saq", "saq", "saq", "saq_app",
               lambda url, name: [_bin("saq", "saq"), "saq_app.settings", "--workers", "1"],
               "saq saq_app.settings --workers 1 (settings: concurrency 1)"),
        System("celery", "celery", "celery", "celery_app",
               lambda url, name: [_bin("celery", "celery"), "-A", "celery_app", "worker",
                                  "--pool", "solo", "-n", f"{name}@%h"],
               "celery -A celery_app worker --pool solo (no result backend)"),
        System("rq", "rq", "rq", "rq_app",
               lambda url, name: [_bin("rq", "rq"), "worker", "--url", url, QUEUE],
               "rq worker --url URL Q (default Worker: a forked work horse per job)"),
        System("arq", "arq", "arq", "arq_app",
               lambda url, name: [_bin("arq", "arq"), "arq_app.WorkerSettings"],
               "arq arq_app.WorkerSettings (defaults: max_jobs 10, poll_delay 0.5 s)",
               concurrency=10),
    ]  # fmt: skip


SYSTEMS: dict[str, System] = {s.key: s for s in _table()}
