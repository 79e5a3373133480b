"""Simulated fleets for end-to-end tests: real worker processes (or threads) on the test's Redis.

``pytest --shim-workers=N`` sizes the ``shim_fleet`` fixture. Process workers are real ``shim
worker`` processes, so a test can SIGKILL, SIGSTOP and SIGCONT them; thread workers are cheaper and
work on the embedded (fakeredis) backend, but cannot crash for real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.worker import Worker, WorkerConfig

#: Seconds a worker process gets to register before a fleet start counts as failed.
REGISTER_TIMEOUT = 30.0


class FleetWorker:
    """One worker of a fleet: a process (``pid`` set) or an in-process thread group."""

    def __init__(
        self,
        worker_id: str,
        *,
        process: subprocess.Popen[bytes] | None = None,
        thread_worker: Worker | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.id = worker_id
        self.process = process
        self.thread_worker = thread_worker
        self.log_path = log_path

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            raise RuntimeError(f"{self.id} is a thread worker: only process workers take signals")
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash."""
        self._signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes (a hang) but keeps its connections."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """Graceful stop (SIGTERM for a process); returns the exit code of a process."""
        if self.thread_worker is not None:
            self.thread_worker.stop(grace=timeout)
            return None
        self._ask_to_stop()
        return self._wait_stopped(timeout)

    def _ask_to_stop(self) -> None:
        """SIGCONT (a paused worker) and SIGTERM, once, to a process still running."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)

    def _wait_stopped(self, timeout: float) -> int:
        """The exit code after :meth:`_ask_to_stop`, killing the process after ``timeout`` s."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.process.wait(timeout=10)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.thread_worker is not None and not self.thread_worker.wait_stopped(0)

    def log(self) -> str:
        """What the worker process printed (empty for thread workers)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""


class Fleet:
    """A group of workers on one namespace, with helpers to break them and wait for them."""

    def __init__(
        self,
        settings: Settings,
        *,
        mode: str = "process",
        heartbeat: float = 1.0,
        default_executor: str = "sim",
        log_dir: Path | None = None,
        concurrency: int = 1,
        plugins: Plugins | None = None,
        allow: Collection[str] = (),
    ) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', not {mode!r}")
        self.settings = settings
        self.mode = mode
        self.heartbeat = heartbeat
        self.default_executor = default_executor
        self.concurrency = concurrency
        #: Executors that run code the workers may run (``shim worker --allow``).
        self.allow = tuple(allow)
        #: Plugins of thread workers (process workers load the installed entry points).
        self.plugins = plugins
        self.log_dir = log_dir or Path.cwd()
        self.connection = RedisConnectionManager.for_settings(settings)
        self.queue = TaskQueue(self.connection, settings)
        self.registry = WorkerRegistry(self.connection, settings)
        self.workers: list[FleetWorker] = []

    def start(self, count: int) -> list[FleetWorker]:
        """Start ``count`` workers and wait until all of them are registered."""
        started = [self.add_worker(wait=False) for _ in range(count)]
        self.wait_registered(started)
        return started

    def add_worker(
        self,
        *,
        slow: float | None = None,
        flaky: float | None = None,
        heartbeat: float | None = None,
        types: str | None = None,
        concurrency: int | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> FleetWorker:
        """Add a worker; ``slow`` multiplies simulated durations, ``flaky`` is the probability an
        attempt of a simulated task fails."""
        worker_id = f"fleet-{len(self.workers) + 1}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        extra = dict(env or {})
        if slow is not None:
            extra["SHIM_SIM_SLOWDOWN"] = str(slow)
        if flaky is not None:
            extra["SHIM_SIM_FAIL_RATE"] = str(flaky)
        start = self._spawn if self.mode == "process" else self._thread
        worker = start(
            worker_id,
            extra,
            heartbeat=heartbeat or self.heartbeat,
            types=types,
            concurrency=concurrency or self.concurrency,
        )
        self.workers.append(worker)
        if wait:
            self.wait_registered([worker])
        return worker

    def wait_registered(
        self, workers: list[FleetWorker], timeout: float = REGISTER_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        wanted = {w.id for w in workers}
        while not wanted <= set(self.registry.live_worker_ids()):
            dead = [w for w in workers if not w.alive()]
            if dead:
                raise RuntimeError(f"worker {dead[0].id} exited at start:\n{dead[0].log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not register within {timeout} s")
            time.sleep(0.02)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no task is waiting, pending, running or in retry backoff."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.queue.stats()
            if stats.waiting + stats.pending + stats.active + stats.delayed == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"fleet not idle after {timeout} s: {stats.by_type}")
            time.sleep(0.02)

    def worker_running(self, task_id: str) -> FleetWorker | None:
        """The fleet worker holding ``task_id`` now, if any."""
        task = self.queue.get(task_id)
        if task is None or not task.status.is_active:
            return None
        return next((w for w in self.workers if w.id == task.worker_id), None)

    def close(self) -> None:
        """Stop every worker (gracefully, then by force) and disconnect.

        Every process is sent SIGTERM before any is waited for: they stop together instead of
        one after another (an idle worker leaves within tens of milliseconds, one with a task
        in hand when it has finished or released it).
        """
        processes = [w for w in self.workers if w.process is not None]
        for worker in processes:
            try:
                worker._ask_to_stop()
            except Exception:  # a worker killed by the test is already gone
                continue
        for worker in self.workers:
            try:
                if worker.process is not None:
                    worker._wait_stopped(timeout=10)
                else:
                    worker.terminate(timeout=10)
            except Exception:
                continue
        self.connection.disconnect()

    def _spawn(
        self,
        worker_id: str,
        env: dict[str, str],
        *,
        heartbeat: float,
        types: str | None,
        concurrency: int,
    ) -> FleetWorker:
        args = [
            sys.executable,
            "-m",
            "shim_core.cli",
            "worker",
            "--redis",
            self.settings.redis_url,
            "--namespace",
            self.settings.namespace,
            "--id",
            worker_id,
            "--heartbeat",
            str(heartbeat),
            "--default-executor",
            self.default_executor,
            "--concurrency",
            str(concurrency),
            "--grace",
            "5",
        ]
        if types:
            args += ["--types", types]
        if self.allow:
            args += ["--allow", ",".join(self.allow)]
        log_path = self.log_dir / f"{worker_id}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        return FleetWorker(worker_id, process=process, log_path=log_path)

    def _thread(
        self,
        worker_id: str,
        env: dict[str, str],
        *,
        heartbeat: float,
        types: str | None,
        concurrency: int,
    ) -> FleetWorker:
        if env:
            raise ValueError("slow / flaky / env options need process workers")
        options: dict[str, Any] = {
            "worker_id": worker_id,
            "heartbeat_interval": heartbeat,
            "default_executor": self.default_executor,
            "concurrency": concurrency,
            "claim_block": 0.2,
            "allow": self.allow,
        }
        if types:
            options["types"] = tuple(types.split(","))
        worker = Worker(
            self.connection, self.settings, WorkerConfig(**options), plugins=self.plugins
        )
        worker.start()
        return FleetWorker(worker_id, thread_worker=worker)
