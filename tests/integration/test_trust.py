"""Who may make a worker run something: executor allow-lists (claim filters, checked again
before running) and signed tasks, on the queue's real scripts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError, ValidationError
from shim_core.hookspecs import hookimpl
from shim_core.models import FINAL_STATUSES, Task, TaskOutcome, TaskStatus
from shim_core.plugins import Plugins
from shim_core.queue import TaskQueue
from shim_core.registry import WorkerRegistry
from shim_core.signing import TaskSigner
from shim_core.worker import Worker, WorkerConfig
from shim_core.worker.policy import ExecutorPolicy
from tests.helpers import wait_until

SECRET = "s3cret-" + "x" * 24


@pytest.fixture
def start_worker(shim_connection: RedisConnectionManager, shim_settings: Settings) -> Iterator[Any]:
    started: list[Worker] = []

    def start(settings: Settings | None = None, **options: Any) -> Worker:
        config = WorkerConfig(types=("code",), default_executor="sim", claim_block=0.1, **options)
        worker = Worker(shim_connection, settings or shim_settings, config)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(grace=2)


def _touch(path: Path, task_id: str) -> Task:
    return Task(id=task_id, type="code", executor="shell", params={"command": f"touch {path}"})


def test_a_worker_runs_no_code_executor_unless_allowed(
    shim_queue: TaskQueue, start_worker: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    shim_queue.add(_touch(marker, "shell-1"))
    shim_queue.add(Task(id="sim-1", type="code", executor="sim", params={"duration": 0}))
    shim_queue.add(Task(id="default-1", type="code", params={"duration": 0}))  # -> sim
    guarded = start_worker()
    wait_until(lambda: shim_queue.get("sim-1").status is TaskStatus.COMPLETE)  # type: ignore[union-attr]
    wait_until(lambda: shim_queue.get("default-1").status is TaskStatus.COMPLETE)  # type: ignore[union-attr]
    left = shim_queue.get("shell-1")
    assert left is not None
    assert left.status is TaskStatus.PENDING
    assert left.attempts == 0
    assert not marker.exists()
    assert guarded.policy.denied >= {"shell", "python", "agent"}

    start_worker(allow={"shell"})  # a worker that allows it takes the task
    wait_until(lambda: shim_queue.get("shell-1").status is TaskStatus.COMPLETE)  # type: ignore[union-attr]
    assert marker.exists()


def test_the_registry_shows_what_a_worker_leaves(
    shim_connection: RedisConnectionManager, shim_settings: Settings, start_worker: Any
) -> None:
    worker = start_worker(allow={"python"})
    found = WorkerRegistry(shim_connection, shim_settings).get_worker(worker.id)
    assert found is not None
    assert set(found.denied_executors) == {"shell", "agent"}
    assert found.denied_types == ()


def test_the_executor_checks_again_whatever_the_registry_says(
    shim_queue: TaskQueue, start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker()
    # Anyone with write access can empty the worker's deny list: the claim then hands it the
    # task, and the worker still refuses to run it.
    shim_queue.client.hset(shim_queue.keys.worker(worker.id), "deny", "not json")
    marker = tmp_path / "ran"
    shim_queue.add(attrs.evolve(_touch(marker, "shell-2"), max_attempts=1))
    done = wait_until(lambda: (t := shim_queue.get("shell-2")) and t.status.value == "failed" and t)
    assert "not allowed on this worker" in (done.result.error or "")
    assert not marker.exists()


def test_a_verifying_worker_runs_signed_tasks_and_rejects_the_rest(
    shim_connection: RedisConnectionManager,
    shim_settings: Settings,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    signed_settings = attrs.evolve(shim_settings, secret=SECRET)
    signing = TaskQueue(shim_connection, signed_settings)
    plain = TaskQueue(shim_connection, shim_settings)
    ok, unsigned, tampered = tmp_path / "ok", tmp_path / "unsigned", tmp_path / "tampered"
    signing.add(_touch(ok, "signed"))
    plain.add(_touch(unsigned, "unsigned"))
    signing.add(_touch(tmp_path / "never", "tampered"))
    # Changed in Redis after it was signed, as an attacker with write access would.
    evil = f'{{"command":"touch {tampered}"}}'
    signing.client.hset(signing.keys.task("tampered"), "params", evil)
    stored = signing.get("signed")
    assert stored is not None
    assert stored.signature
    assert signing.signer is not None
    assert signing.signer.verify(stored)

    start_worker(signed_settings, allow={"shell"})

    def final(tid: str) -> Task:
        return wait_until(lambda: (t := signing.get(tid)) and t.status in FINAL_STATUSES and t)

    finished = {tid: final(tid) for tid in ("signed", "unsigned", "tampered")}
    assert finished["signed"].status is TaskStatus.COMPLETE
    assert ok.exists()
    for tid in ("unsigned", "tampered"):
        task = finished[tid]
        assert task.status is TaskStatus.FAILED
        assert task.attempts == 1  # failed at once, never retried
        assert task.result.outcome is TaskOutcome.REJECTED
        assert "signature mismatch" in task.result.error
    assert not unsigned.exists()
    assert not tampered.exists()


def test_updating_a_signed_task_needs_the_secret(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    signing = TaskQueue(shim_connection, attrs.evolve(shim_settings, secret=SECRET))
    plain = TaskQueue(shim_connection, shim_settings)
    signing.add(Task(id="u1", type="code", executor="sim", params={"duration": 0}))
    with pytest.raises(ValidationError, match="is signed"):
        plain.update("u1", params={"duration": 5})
    plain.update("u1", priority="high")  # not a signed field
    signing.update("u1", params={"duration": 1})
    updated = signing.get("u1")
    assert updated is not None
    assert updated.params == {"duration": 1}
    assert TaskSigner([SECRET], namespace=shim_settings.namespace).verify(updated)


def test_bad_allow_lists_are_refused_before_joining() -> None:
    plugins = Plugins()
    with pytest.raises(ShimError, match="no installed executor: nosuch"):
        ExecutorPolicy.build(plugins, {"nosuch"})
    with pytest.raises(ShimError, match="allow it with --allow shell"):
        ExecutorPolicy.build(plugins, set(), default_executor="shell")
    everything = ExecutorPolicy.build(plugins, {"all"}, types=("code",), default_executor="shell")
    assert everything.denied == frozenset()
    assert everything.refusal("shell") is None
    some = ExecutorPolicy.build(plugins, {"shell"}, types=("code",), default_executor="shell")
    assert some.refusal("python") is not None
    assert some.denied_types == ()


def test_bad_types_and_default_executors_are_refused_and_unknown_types_named() -> None:
    """A default executor that is not installed and a type that is no valid name are refused;
    a valid type nothing declares is named (a plan cannot use it), not refused."""
    plugins = Plugins()
    with pytest.raises(ShimError, match="--default-executor names no installed executor: 'nosu"):
        ExecutorPolicy.build(plugins, {"all"}, default_executor="nosuch")
    with pytest.raises(ShimError, match="invalid task type 'bad type'"):
        ExecutorPolicy.build(plugins, {"all"}, types=("code", "bad type"))
    policy = ExecutorPolicy.build(plugins, {"all"}, types=("code", "docs"))
    assert policy.unknown_types == ("docs",)


@pytest.mark.shim_real_redis
def test_the_worker_command_names_a_bad_allow_list(shim_settings: Settings) -> None:
    args = ["worker", "--redis", shim_settings.redis_url, "--allow", "shell,nosuch"]
    command = [sys.executable, "-m", "shim_core.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "error: --allow names no installed executor: nosuch" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_task_changed_in_redis_is_never_signed_again_by_an_update(
    shim_connection: RedisConnectionManager, shim_settings: Settings
) -> None:
    """An operator's routine update must not bless what an attacker changed behind it."""
    signing = TaskQueue(shim_connection, attrs.evolve(shim_settings, secret=SECRET))
    signing.add(Task(id="u2", type="code", executor="shell", params={"command": "true"}))
    signing.client.hset(signing.keys.task("u2"), "params", '{"command":"id"}')
    with pytest.raises(ValidationError, match="does not verify"):
        signing.update("u2", title="renamed")
    stored = signing.get("u2")
    assert stored is not None
    assert signing.signer is not None
    assert not signing.signer.verify(stored)


def test_fields_that_steer_an_agent_are_signed_too() -> None:
    signer = TaskSigner([SECRET])
    task = Task(id="a1", type="code", executor="agent", run_id="r1", dependencies=("d1",))
    signed = attrs.evolve(task, signature=signer.sign(task))
    for change in ({"run_id": "r2"}, {"run_id": None}, {"dependencies": ()}, {"timeout_ms": 1}):
        assert not signer.verify(attrs.evolve(signed, **change))  # type: ignore[arg-type]


def test_types_a_denied_executor_declares_are_left_whatever_the_workers_types() -> None:
    @attrs.define
    class Deploy:
        name: str = "deploy"
        task_types: tuple[str, ...] = ("deploy",)

        def execute(self, task: Task, ctx: Any) -> Any:  # pragma: no cover - never run
            raise AssertionError("a denied executor ran")

    plugins = Plugins(entry_points=False, extra=[_Provides(Deploy())])
    policy = ExecutorPolicy.build(plugins, set(), types=("code",))
    assert "deploy" in policy.denied
    assert policy.denied_types == ("deploy",)  # a task targeted at the worker may have it


class _Provides:
    def __init__(self, executor: Any) -> None:
        self.executor = executor

    @hookimpl
    def shim_executors(self) -> list[Any]:
        return [self.executor]
