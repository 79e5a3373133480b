"""Adding tasks: defaults, batches, and every refusal happening before anything is written."""

import pytest

from shim_core import (
    DependencyCycle,
    DuplicateTask,
    MissingDependency,
    PayloadTooLarge,
    Priority,
    Task,
    TaskContext,
    TaskStatus,
    ValidationError,
    WorkerRegistration,
)
from shim_core.doctor import check_invariants
from shim_core.queue import ADD_CHUNK, TaskQueue
from shim_core.registry import WorkerRegistry


def test_added_task_is_pending_with_queue_defaults(shim_queue):
    """A task without dependencies is claimable at once and carries the settings' retry policy."""
    shim_queue.add(Task(id="a", title="A", context=TaskContext(files=("x.py",))))
    task = shim_queue.get("a")
    assert task.status is TaskStatus.PENDING
    assert (task.max_attempts, task.backoff_ms, task.max_stalled) == (3, 1000, 2)
    assert task.context.files == ("x.py",)
    assert task.created_at is not None
    assert shim_queue.stats().pending == 1


def test_task_with_unfinished_dependency_waits(shim_queue):
    """A task whose dependency is not complete waits with its count of dependencies left."""
    shim_queue.add_many([Task(id="b", dependencies=("a",)), Task(id="a")])
    b = shim_queue.get("b")
    assert b.status is TaskStatus.WAITING
    assert b.deps_left == 1
    assert shim_queue.stats().waiting == 1


def test_get_missing_task_returns_none(shim_queue):
    """Reading an unknown id gives None rather than an error."""
    assert shim_queue.get("nope") is None
    assert shim_queue.get_many(["nope"]) == [None]


def test_duplicate_id_is_refused_and_nothing_written(shim_queue):
    """Adding an id that exists raises DuplicateTask and leaves the namespace unchanged."""
    shim_queue.add(Task(id="a", title="first"))
    with pytest.raises(DuplicateTask) as info:
        shim_queue.add_many([Task(id="new"), Task(id="a", title="second")])
    assert info.value.task_id == "a"
    assert shim_queue.get("a").title == "first"
    assert shim_queue.get("new") is None


def test_duplicate_within_batch_is_refused(shim_queue):
    """Two tasks with one id in one batch are refused."""
    with pytest.raises(DuplicateTask):
        shim_queue.add_many([Task(id="a"), Task(id="a")])
    assert shim_queue.stats().total == 0


def test_missing_dependency_is_refused(shim_queue):
    """A dependency on an unknown task raises MissingDependency naming both tasks."""
    with pytest.raises(MissingDependency) as info:
        shim_queue.add_many([Task(id="a"), Task(id="b", dependencies=("ghost",))])
    assert (info.value.task_id, info.value.dependency) == ("b", "ghost")
    assert shim_queue.stats().total == 0


def test_cycle_is_refused_and_named(shim_queue):
    """A dependency cycle is refused with the cycle spelled out."""
    tasks = [
        Task(id="a", dependencies=("c",)),
        Task(id="b", dependencies=("a",)),
        Task(id="c", dependencies=("b",)),
    ]
    with pytest.raises(DependencyCycle) as info:
        shim_queue.add_many(tasks)
    assert info.value.cycle[0] == info.value.cycle[-1]
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert shim_queue.stats().total == 0


def test_self_dependency_is_refused(shim_queue):
    """A task that depends on itself is refused as a one-task cycle."""
    with pytest.raises(DependencyCycle, match="a -> a"):
        shim_queue.add(Task(id="a", dependencies=("a",)))


@pytest.mark.parametrize(
    "task",
    [
        Task(id="has space"),
        Task(id=""),
        Task(id="a", type="bad type"),
        Task(id="a", assigned_to="w 1"),
    ],
)
def test_malformed_task_is_refused(shim_queue, task):
    """Ids, types and worker names that could not form a key are refused."""
    with pytest.raises(ValidationError):
        shim_queue.add(task)


def test_params_that_cannot_be_stored_are_refused_before_anything_is_written(shim_queue):
    with pytest.raises(ValidationError, match="cannot be stored"):
        shim_queue.add_many([Task(id="fine"), Task(id="odd", params={"x": object()})])
    assert shim_queue.stats().total == 0


def test_oversized_payload_is_refused(shim_connection, shim_settings):
    """A task bigger than max_payload_bytes is refused before it reaches Redis."""
    import attrs

    queue = TaskQueue(shim_connection, attrs.evolve(shim_settings, max_payload_bytes=1000))
    with pytest.raises(PayloadTooLarge) as info:
        queue.add(Task(id="big", params={"blob": "x" * 2000}))
    assert info.value.size > info.value.limit == 1000
    assert queue.get("big") is None


def test_dependency_on_existing_task_is_accepted(shim_queue):
    """A new task may depend on a task added earlier."""
    shim_queue.add(Task(id="a"))
    shim_queue.add(Task(id="b", dependencies=("a",)))
    assert shim_queue.get("b").status is TaskStatus.WAITING


def test_dependency_on_failed_task_is_cancelled_at_once(shim_queue):
    """A task added after its dependency failed for good is cancelled, never run."""
    shim_queue.add(Task(id="a", max_attempts=1))
    claim = shim_queue.claim(["code"])[0]
    shim_queue.fail("a", claim.token, "boom")
    shim_queue.add(Task(id="b", dependencies=("a",)))
    b = shim_queue.get("b")
    assert b.status is TaskStatus.CANCELLED
    assert "dependency a failed" in b.result.error
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_large_batch_spans_chunks_and_keeps_order(shim_queue):
    """A batch larger than one script call is added whole, in FIFO order, dependencies intact."""
    n = ADD_CHUNK * 2 + 10
    tasks = [Task(id=f"t{i:05d}") for i in range(n)]
    tasks.append(Task(id="last", dependencies=("t00000", f"t{n - 1:05d}")))
    shim_queue.add_many(tasks)
    stats = shim_queue.stats()
    assert (stats.pending, stats.waiting) == (n, 1)
    claims = shim_queue.claim(["code"], count=5)
    assert [c.task.id for c in claims] == [f"t{i:05d}" for i in range(5)]


def test_large_batch_with_missing_dependency_writes_nothing(shim_queue):
    """A refusal found in the last chunk of a large batch still leaves Redis untouched."""
    tasks = [Task(id=f"t{i}") for i in range(ADD_CHUNK + 5)]
    tasks.append(Task(id="bad", dependencies=("ghost",)))
    with pytest.raises(MissingDependency):
        shim_queue.add_many(tasks)
    assert shim_queue.stats().total == 0


def test_large_batch_with_existing_id_writes_nothing(shim_queue):
    """A duplicate of an existing task inside a large batch is found before writing."""
    shim_queue.add(Task(id="t7"))
    with pytest.raises(DuplicateTask):
        shim_queue.add_many([Task(id=f"t{i}") for i in range(ADD_CHUNK + 5)])
    assert shim_queue.stats().total == 1


def test_update_changes_fields_and_rescores_pending(shim_queue):
    """Raising a pending task's priority moves it ahead of older tasks of its old band."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    shim_queue.update("b", priority=Priority.CRITICAL, title="urgent")
    assert shim_queue.get("b").title == "urgent"
    assert shim_queue.claim(["code"])[0].task.id == "b"


def test_update_refuses_unknown_fields_and_finished_tasks(shim_queue):
    """Queue-kept fields cannot be updated, and finished tasks are immutable."""
    from shim_core import InvalidTransition, TaskNotFound

    shim_queue.add(Task(id="a"))
    with pytest.raises(ValidationError, match="status"):
        shim_queue.update("a", status=TaskStatus.COMPLETE)
    with pytest.raises(TaskNotFound):
        shim_queue.update("ghost", title="x")
    claim = shim_queue.claim(["code"])[0]
    shim_queue.complete("a", claim.token)
    with pytest.raises(InvalidTransition, match="complete"):
        shim_queue.update("a", title="late")


def test_a_run_record_is_written_by_the_script_that_adds_its_tasks(shim_queue):
    """add_run writes the record and the tasks together, or neither (a refused batch leaves no
    record behind); the record's created_at is the server's clock."""
    shim_queue.add(Task(id="taken"))
    with pytest.raises(DuplicateTask):
        shim_queue.add_run("r1", {"name": "refused"}, [Task(id="new"), Task(id="taken")])
    assert shim_queue.run_fields("r1") == {}
    assert shim_queue.get("new") is None
    assert shim_queue.latest_run_id() is None

    added, created_ms = shim_queue.add_run("r2", {"name": "ok"}, [Task(id="a"), Task(id="b")])
    assert [t.id for t in added] == ["a", "b"]
    fields = shim_queue.run_fields("r2")
    assert fields == {"name": "ok", "created_at": str(created_ms)}
    assert shim_queue.latest_run_id() == "r2"


def test_task_for_a_worker_that_left_goes_to_any_worker(shim_connection, shim_settings, shim_queue):
    """A task added for a worker that has gone offline is stored without its target, in the
    queue of its type, where any worker claims it (not left naming a worker that will never
    come back)."""
    registry = WorkerRegistry(shim_connection, shim_settings)
    registry.register_worker(WorkerRegistration(id="gone"), heartbeat_interval=1.0)
    registry.register_worker(WorkerRegistration(id="here"), heartbeat_interval=1.0)
    registry.unregister_worker("gone")
    shim_queue.add_many(
        [Task(id="orphan", assigned_to="gone"), Task(id="kept", assigned_to="here")]
    )
    assert shim_queue.get("orphan").assigned_to is None
    assert shim_queue.get("kept").assigned_to == "here"
    claimed = shim_queue.claim(["code"], worker_id="other", count=2)
    assert [c.task.id for c in claimed] == ["orphan"]
    assert check_invariants(shim_queue.client, shim_queue.keys) == []
