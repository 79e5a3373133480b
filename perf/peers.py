"""Same-run comparison of SHIM with peer Python task queues on one redis-server.

For each system: enqueue N no-op tasks (default 2,000; batched or pipelined where the library
offers it) and time it, then drain them with one worker doing no work and time that. Every system
runs in a child process of its own with a time limit, after a FLUSHDB, and first does a small
untimed warm-up round (scripts loaded, connections open, imports done); a failure or a missing
package prints ``skipped: reason`` and the next system runs.

Drain timing: from the moment the (already constructed) worker starts until the last task has run.
In-process workers (SHIM, RQ, arq, Dramatiq, bullmq) count completions themselves. Celery's worker
is a ``celery worker --pool=solo`` subprocess: it is started and ready before the clock starts,
the tasks are published to a staging list that it does not read, and the clock runs from the
RENAME of that list onto its queue until its ``task_postrun`` handler reports the last task.

The target database is flushed between systems: with ``--redis-url`` point it at a scratch db.

Run: ``PYTHONPATH=. python perf/peers.py [--peer-python arq=/path/to/python]`` (about 40 s here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import redis
from _server import add_server_args, describe, redis_url

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parent
RESULT_TAG = "RESULT "
EXIT_MISSING = 3
QUEUE = "perf"

#: (enqueue seconds, drain seconds, tasks the worker ran)
Cycle = tuple[float, float, int]


class Missing(Exception):
    """A package the system needs is not importable in this interpreter."""


# ------------------------------------------------------------------------ the systems (children)


def _shim(add_single: bool, claim_count: int) -> Callable[[str, int, int], dict[str, Any]]:
    def run(url: str, n: int, warmup: int) -> dict[str, Any]:
        try:
            from shim_core.config import Settings
            from shim_core.connection import RedisConnectionManager
            from shim_core.models import Task
            from shim_core.queue import TaskQueue
        except ImportError as exc:
            raise Missing(str(exc)) from exc

        manager = RedisConnectionManager(url)
        queue = TaskQueue(manager, Settings(redis_url=url, namespace="perfpeers"))

        def cycle(count: int) -> Cycle:
            done_before = queue.stats().complete
            start = time.perf_counter()
            tasks = [Task(type=QUEUE) for _ in range(count)]
            if add_single:
                for task in tasks:
                    queue.add(task)
            else:
                queue.add_many(tasks)
            enqueued = time.perf_counter()
            types = [QUEUE]
            if claim_count == 0:  # chained: each completion claims the next (a busy worker)
                claims = queue.claim(types, count=1)
                while claims:
                    _, claims = queue.complete_and_claim(
                        claims[0].task.id, claims[0].token, None, types
                    )
            while claim_count and (claims := queue.claim(types, count=claim_count)):
                for claim in claims:
                    queue.complete(claim.task.id, claim.token)
            drained = time.perf_counter()
            return enqueued - start, drained - enqueued, queue.stats().complete - done_before

        cycle(warmup)
        result = cycle(n)
        manager.disconnect()
        return _report(
            result,
            "shim",
            "add() one task per call" if add_single else "add_many (pipelined)",
            f"claim(count={claim_count}) + complete each, one loop"
            if claim_count
            else "claim once, then complete_and_claim (1 round trip per task), one loop",
        )

    return run


def run_rq(url: str, n: int, warmup: int) -> dict[str, Any]:
    try:
        from rq import Queue, SimpleWorker
    except ImportError as exc:
        raise Missing(str(exc)) from exc
    conn = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=conn)

    def cycle(count: int) -> Cycle:
        finished_before = queue.finished_job_registry.count
        start = time.perf_counter()
        queue.enqueue_many([Queue.prepare_data("_peer_tasks.noop") for _ in range(count)])
        enqueued = time.perf_counter()
        worker = SimpleWorker([queue], connection=conn)
        begin = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        drained = time.perf_counter()
        ran = queue.finished_job_registry.count - finished_before
        return enqueued - start, drained - begin, ran

    cycle(warmup)
    return _report(
        cycle(n),
        "rq",
        "enqueue_many (one pipeline)",
        "SimpleWorker.work(burst=True), no fork per job",
    )


def _dramatiq(threads: int) -> Callable[[str, int, int], dict[str, Any]]:
    def run(url: str, n: int, warmup: int) -> dict[str, Any]:
        return run_dramatiq(url, n, warmup, threads)

    return run


def run_dramatiq(url: str, n: int, warmup: int, threads: int) -> dict[str, Any]:
    try:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
    except ImportError as exc:
        raise Missing(str(exc)) from exc
    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    state = {"done": 0, "target": 0}
    reached = threading.Event()
    lock = threading.Lock()

    class CountDone(dramatiq.Middleware):
        def after_process_message(
            self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
        ) -> None:
            with lock:
                state["done"] += 1
                if state["done"] >= state["target"]:
                    reached.set()

    broker.add_middleware(CountDone())
    dramatiq.set_broker(broker)

    def noop() -> None:
        return None

    actor = dramatiq.actor(actor_name="shim_perf_noop", queue_name=QUEUE, broker=broker)(noop)

    def cycle(count: int) -> Cycle:
        state["done"], state["target"] = 0, count
        reached.clear()
        start = time.perf_counter()
        for _ in range(count):
            actor.send()
        enqueued = time.perf_counter()
        worker = dramatiq.Worker(broker, worker_threads=threads)
        begin = time.perf_counter()
        worker.start()
        finished = reached.wait(120)
        drained = time.perf_counter()
        worker.stop()
        if not finished:
            raise RuntimeError(f"dramatiq ran {state['done']} of {count} tasks")
        return enqueued - start, drained - begin, state["done"]

    cycle(warmup)
    return _report(
        cycle(n),
        "dramatiq",
        "actor.send() per task (no batch API)",
        f"Worker(worker_threads={threads}), prefetch 2 x threads (default)",
    )


def run_bullmq(url: str, n: int, warmup: int) -> dict[str, Any]:
    try:
        from bullmq import Queue, Worker
    except ImportError as exc:
        raise Missing(str(exc)) from exc

    async def noop(job: Any, token: Any) -> None:
        return None

    async def main() -> Cycle:
        queue = Queue(QUEUE, {"connection": url})

        async def cycle(count: int) -> Cycle:
            done = {"n": 0}
            reached = asyncio.Event()

            def on_completed(*_: Any) -> None:
                done["n"] += 1
                if done["n"] >= count:
                    reached.set()

            start = time.perf_counter()
            await queue.addBulk([{"name": "noop", "data": {}} for _ in range(count)])
            enqueued = time.perf_counter()
            worker = Worker(QUEUE, noop, {"connection": url, "autorun": False})
            worker.on("completed", on_completed)
            begin = time.perf_counter()
            runner = asyncio.ensure_future(worker.run())
            await asyncio.wait_for(reached.wait(), 120)
            drained = time.perf_counter()
            await worker.close()
            await runner
            return enqueued - start, drained - begin, done["n"]

        await cycle(warmup)
        result = await cycle(n)
        await queue.close()
        return result

    return _report(
        asyncio.run(main()),
        "bullmq",
        "Queue.addBulk (one MULTI pipeline)",
        "Worker(concurrency=1, the default)",
    )


def _arq(poll_delay: float | None) -> Callable[[str, int, int], dict[str, Any]]:
    def run(url: str, n: int, warmup: int) -> dict[str, Any]:
        try:
            from arq import create_pool
            from arq.connections import RedisSettings
            from arq.worker import Worker, func
        except ImportError as exc:
            raise Missing(str(exc)) from exc
        logging.getLogger("arq").setLevel(logging.WARNING)

        async def noop(ctx: Any) -> None:
            return None

        async def main() -> Cycle:
            pool = await create_pool(RedisSettings.from_dsn(url))

            async def cycle(count: int) -> Cycle:
                start = time.perf_counter()
                for _ in range(count):
                    await pool.enqueue_job("noop")
                enqueued = time.perf_counter()
                options: dict[str, Any] = {} if poll_delay is None else {"poll_delay": poll_delay}
                worker = Worker(
                    functions=[func(noop, name="noop")],
                    redis_pool=pool,
                    burst=True,
                    handle_signals=False,
                    **options,
                )
                begin = time.perf_counter()
                await worker.main()
                drained = time.perf_counter()
                return enqueued - start, drained - begin, worker.jobs_complete

            await cycle(warmup)
            result = await cycle(n)
            await pool.aclose()
            return result

        poll = "0.5 s (default)" if poll_delay is None else f"{poll_delay} s"
        return _report(
            asyncio.run(main()),
            "arq",
            "enqueue_job() per task (no batch API)",
            f"Worker(burst=True, max_jobs=10 default, poll_delay={poll})",
        )

    return run


def run_celery(url: str, n: int, warmup: int) -> dict[str, Any]:
    try:
        import celery  # noqa: F401
    except ImportError as exc:
        raise Missing(str(exc)) from exc
    tag = f"perf:celery:{os.getpid()}"
    staging, live = f"{tag}:staging", f"{tag}:live"
    ready_key, done_key = f"{tag}:ready", f"{tag}:done"
    os.environ.update(
        {
            "SHIM_PERF_REDIS_URL": url,
            "SHIM_PERF_READY_KEY": ready_key,
            "SHIM_PERF_DONE_KEY": done_key,
            "SHIM_PERF_MILESTONES": f"{warmup},{warmup + n}",
        }
    )
    from _peer_celery import app, noop

    client = redis.Redis.from_url(url)
    scratch = os.environ.get("SHIM_PERF_SCRATCH")  # removed by the parent even if we are killed
    with tempfile.NamedTemporaryFile(prefix="celery-", suffix=".log", dir=scratch) as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "_peer_celery",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "-Q",
                live,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
                "--hostname",
                f"perf{os.getpid()}@localhost",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        try:
            if client.blpop([ready_key], timeout=60) is None:
                raise RuntimeError("celery worker did not become ready: " + _tail(log.name))

            def publish(count: int) -> float:
                start = time.perf_counter()
                with app.producer_or_acquire() as producer:
                    for _ in range(count):
                        noop.apply_async(queue=staging, producer=producer)
                return time.perf_counter() - start

            def release_and_wait() -> tuple[float, int]:
                begin = time.perf_counter()
                client.rename(staging, live)
                got = client.blpop([done_key], timeout=120)
                drained = time.perf_counter()
                if got is None:
                    raise RuntimeError("celery worker did not finish: " + _tail(log.name))
                return drained - begin, int(got[1])

            publish(warmup)
            release_and_wait()
            enqueue_s = publish(n)
            drain_s, ran = release_and_wait()
        finally:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)
    return _report(
        (enqueue_s, drain_s, ran - warmup),
        "celery",
        "apply_async per task on one producer (no pipelined bulk publish)",
        "celery worker --pool=solo subprocess, prefetch multiplier 4 (default)",
    )


def _tail(path: str, chars: int = 400) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:].strip()
    except OSError:
        return "(no log)"


def _report(cycle: Cycle, package: str, enqueue_how: str, drain_how: str) -> dict[str, Any]:
    enqueue_s, drain_s, ran = cycle
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "source"
    return {
        "enqueue_s": enqueue_s,
        "drain_s": drain_s,
        "ran": ran,
        "version": version,
        "python": sys.executable,
        "enqueue_how": enqueue_how,
        "drain_how": drain_how,
    }


SYSTEMS: dict[str, Callable[[str, int, int], dict[str, Any]]] = {
    "shim": _shim(add_single=False, claim_count=1),
    "shim-add1": _shim(add_single=True, claim_count=1),
    "shim-claim100": _shim(add_single=False, claim_count=100),
    "shim-chain": _shim(add_single=False, claim_count=0),
    "rq": run_rq,
    "celery": run_celery,
    "arq": _arq(poll_delay=None),
    "arq-poll10ms": _arq(poll_delay=0.01),
    "dramatiq": _dramatiq(threads=1),
    "dramatiq-8threads": _dramatiq(threads=8),
    "bullmq": run_bullmq,
}


def child_main(name: str, url: str, n: int, warmup: int) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        result = SYSTEMS[name](url, n, warmup)
    except Missing as exc:
        print(f"not installed in {sys.executable}: {exc}", file=sys.stderr)
        return EXIT_MISSING
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------ the parent


def _child_env(scratch: str) -> dict[str, str]:
    env = os.environ.copy()
    env["SHIM_PERF_SCRATCH"] = scratch
    paths = [str(PERF_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_system(
    name: str, url: str, args: argparse.Namespace, python: str, scratch: str
) -> dict[str, Any]:
    """Run one system in a child process group; returns its result or {'skipped': reason}."""
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--redis-url",
        url,
        "--tasks",
        str(args.tasks),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(scratch),
        cwd=str(REPO_ROOT),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and any worker it started
        proc.communicate()
        return {"skipped": f"timed out after {args.timeout:g} s"}
    if proc.returncode == EXIT_MISSING:
        return {"skipped": err.strip().splitlines()[-1]}
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}, no output"
    return {"skipped": f"failed: {reason}"}


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def render(rows: list[tuple[str, dict[str, Any]]], n: int) -> str:
    head = (
        f"{'system':<18} {'version':<9} {'enqueue s':>9} {'enqueue/s':>10} "
        f"{'drain s':>8} {'drain/s':>8} {'ran':>6}"
    )
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for name, r in rows:
        if "skipped" in r:
            lines.append(f"{name:<18} skipped: {r['skipped']}")
            continue
        flag = "" if r["ran"] == n else " (!)"
        lines.append(
            f"{name:<18} {r['version']:<9} {r['enqueue_s']:>9.3f} {n / r['enqueue_s']:>10,.0f} "
            f"{r['drain_s']:>8.3f} {n / r['drain_s']:>8,.0f} {r['ran']:>6}{flag}"
        )
        notes.append(f"  {name}: enqueue = {r['enqueue_how']}; drain = {r['drain_how']}")
    return "\n".join([*lines, "", "how each system was driven:", *notes])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per system")
    parser.add_argument("--warmup", type=int, default=50, help="untimed warm-up tasks first")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per system")
    parser.add_argument(
        "--only", default="", help="comma-separated systems (default: all): " + ", ".join(SYSTEMS)
    )
    parser.add_argument(
        "--peer-python",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help="interpreter for systems whose name starts with NAME, e.g. "
        "arq=/tmp/venv-arq/bin/python (arq pins redis<6)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.tasks < 1 or args.warmup < 1:
        parser.error("--tasks and --warmup must be at least 1")
    if args.child:
        return child_main(args.child, args.redis_url, args.tasks, args.warmup)

    selected = [s.strip() for s in args.only.split(",") if s.strip()] or list(SYSTEMS)
    unknown = sorted(set(selected) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s): {', '.join(unknown)}")
    pythons: dict[str, str] = {}
    for item in args.peer_python:
        prefix, _, python = item.partition("=")
        if not python:
            parser.error(f"--peer-python takes NAME=PYTHON, got {item!r}")
        pythons[prefix] = python

    def python_for(name: str) -> str:
        for prefix, python in pythons.items():
            if name.startswith(prefix):
                return python
        return sys.executable

    started = time.perf_counter()
    rows: list[tuple[str, dict[str, Any]]] = []
    with (
        redis_url(args.redis_url, args.redis_server) as url,
        tempfile.TemporaryDirectory(prefix="shim-perf-peers-") as scratch,
    ):
        print(describe(url))
        print(
            f"{args.tasks:,} no-op tasks per system (after {args.warmup} warm-up tasks), "
            f"one worker, limit {args.timeout:g} s each"
        )
        for name in selected:
            _flush(url)
            t0 = time.perf_counter()
            result = run_system(name, url, args, python_for(name), scratch)
            status = result.get("skipped") or "ok"
            print(f"  {name}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
            rows.append((name, result))
        _flush(url)
    print()
    print(render(rows, args.tasks))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
