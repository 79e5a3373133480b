"""``TaskQueue.add_map``: one template, many params, the same tasks as ``add_many`` would add."""

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from shim_core import (
    DuplicateTask,
    PayloadTooLarge,
    Priority,
    Task,
    TaskStatus,
    ValidationError,
)
from shim_core.doctor import check_invariants
from shim_core.queue import ADD_CHUNK, TaskQueue

#: Fields that differ between two equal tasks added at different times or under other ids.
_OWN = {"id", "created_at"}


def _same_task(a: Task, b: Task) -> dict[str, Any]:
    """The fields in which ``a`` and ``b`` differ, their ids and creation times aside."""
    left, right = attrs.asdict(a), attrs.asdict(b)
    return {k: (left[k], right[k]) for k in left if k not in _OWN and left[k] != right[k]}


def _stored(queue: TaskQueue, task_id: str) -> dict[str, str]:
    """The task's hash as stored, without the fields two tasks added apart always differ in."""
    fields = queue.client.hgetall(queue.keys.task(task_id))
    return {k: v for k, v in fields.items() if k not in {"id", "seq", "created_at", "ready_at"}}


def test_mapped_tasks_are_the_tasks_add_many_adds(shim_queue):
    """Each task is the template with the item merged into its params, stored exactly as
    add_many stores that task, and pending in the order of the items."""
    template = Task(
        title="resize",
        type="test",
        priority=Priority.HIGH,
        executor="python",
        params={"function": "app:resize", "size": 64},
        max_attempts=5,
        timeout_ms=60_000,
        estimated_duration=30,
    )
    ids = shim_queue.add_map(template, [{"path": "a.png"}, {"path": "b.png", "size": 128}])
    assert len(set(ids)) == len(ids) == 2
    mapped = [shim_queue.get(i) for i in ids]
    assert [t.params for t in mapped] == [
        {"function": "app:resize", "size": 64, "path": "a.png"},
        {"function": "app:resize", "size": 128, "path": "b.png"},
    ]
    [alone] = shim_queue.add_many([attrs.evolve(template, id="alone", params=mapped[1].params)])
    assert _same_task(mapped[1], shim_queue.get(alone.id)) == {}
    assert _stored(shim_queue, ids[1]) == _stored(shim_queue, "alone")
    assert mapped[0].status is TaskStatus.PENDING
    claims = shim_queue.claim(["test"], count=3)
    assert [c.task.id for c in claims] == [*ids, "alone"]
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_a_large_map_spans_chunks_keeps_order_counts_and_wakes_claimers(shim_queue):
    """More items than one script call takes: all added, FIFO, counted, and the queue's wake
    marker set for the claimers waiting on it."""
    n = ADD_CHUNK * 2 + 10
    ids = shim_queue.add_map(Task(executor="python"), ({"n": i} for i in range(n)))
    assert len(ids) == n
    assert shim_queue.stats().pending == n
    assert shim_queue.client.hget(shim_queue.keys.counts, "pending:code") == str(n)
    assert shim_queue.client.zcard(shim_queue.keys.wake("code")) == 32  # WAKE_MAX claimers
    claims = shim_queue.claim(["code"], count=5)
    assert [c.task.params["n"] for c in claims] == [0, 1, 2, 3, 4]
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_given_ids_name_the_tasks(shim_queue):
    assert shim_queue.add_map(Task(), [{}, {"x": 1}], ids=["first", "second"]) == [
        "first",
        "second",
    ]
    assert shim_queue.get("first").params == {}
    assert shim_queue.get("second").params == {"x": 1}


def test_empty_params_are_stored_as_add_many_stores_them(shim_queue):
    """Params at their default are left out of the hash, as add_many leaves them."""
    [mapped] = shim_queue.add_map(Task(), [{}])
    shim_queue.add(Task(id="alone"))
    assert _stored(shim_queue, mapped) == _stored(shim_queue, "alone")
    assert "params" not in shim_queue.client.hgetall(shim_queue.keys.task(mapped))


def test_the_template_is_checked_without_its_own_id_and_params(shim_queue):
    """Neither is a task's: a template id no task could have and template params every item
    replaces are no error (as the tasks add_many would get)."""
    template = Task(id="not a task id", params={"x": object()})
    [mapped] = shim_queue.add_map(template, [{"x": 1}])
    assert shim_queue.get(mapped).params == {"x": 1}
    [targeted] = shim_queue.add_map(attrs.evolve(template, assigned_to="w1"), [{"x": 2}])
    assert shim_queue.get(targeted).params == {"x": 2}


def test_no_items_add_nothing(shim_queue):
    assert shim_queue.add_map(Task(), []) == []
    assert shim_queue.stats().total == 0


@pytest.mark.parametrize(
    ("items", "ids", "error"),
    [
        ([{}, {}], ["a"], ValidationError),  # one id for two items
        ([{}, "not a mapping"], None, ValidationError),
        ([{}, {"blob": object()}], None, ValidationError),  # params that are not JSON
        ([{}, {}], ["a", "bad id"], ValidationError),
        ([{}, {}], ["same", "same"], DuplicateTask),
        ([{}, {}, {}], "abc", ValidationError),  # a string is not a list of ids
        ([{}, {}], ["a", 2], ValidationError),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(shim_queue, items, ids, error):
    with pytest.raises(error):
        shim_queue.add_map(Task(), items, ids=ids)
    assert shim_queue.stats().total == 0


def test_a_bad_template_is_refused(shim_queue):
    with pytest.raises(ValidationError):
        shim_queue.add_map(Task(type="bad type"), [{}])
    assert shim_queue.stats().total == 0


def test_an_oversized_task_is_refused_before_anything_is_written(shim_connection, shim_settings):
    queue = TaskQueue(shim_connection, attrs.evolve(shim_settings, max_payload_bytes=1000))
    with pytest.raises(PayloadTooLarge) as info:
        queue.add_map(Task(), [{"blob": "x"}, {"blob": "x" * 2000}], ids=["small", "big"])
    assert info.value.task_id == "big"
    assert queue.stats().total == 0


def test_an_existing_id_is_refused_and_nothing_written(shim_queue):
    """In one script call, and in a map larger than one (checked before the first call)."""
    shim_queue.add(Task(id="taken"))
    with pytest.raises(DuplicateTask) as info:
        shim_queue.add_map(Task(), [{}, {}], ids=["free", "taken"])
    assert info.value.task_id == "taken"
    many = [f"t{i}" for i in range(ADD_CHUNK + 5)]
    with pytest.raises(DuplicateTask):
        shim_queue.add_map(Task(), [{}] * len(many), ids=[*many[:-1], "taken"])
    assert shim_queue.stats().total == 1


def test_templates_the_fast_path_does_not_take_add_the_same_tasks(
    shim_connection, shim_settings, shim_queue
):
    """Dependencies, a target worker, an agent named in params, a signing queue: each goes
    through add_many and gives the tasks it would give."""
    shim_queue.add(Task(id="dep"))
    waiting = shim_queue.add_map(Task(dependencies=("dep",)), [{"n": 1}])
    assert shim_queue.get(waiting[0]).status is TaskStatus.WAITING
    targeted = shim_queue.add_map(Task(assigned_to="w1"), [{}])
    assert shim_queue.queued_ids("@w1") == targeted
    [agent_task] = shim_queue.add_map(Task(executor="agent"), [{"agent": "codex"}])
    assert shim_queue.get(agent_task).agent == "codex"
    secret = "s" * 32
    signing = TaskQueue(shim_connection, attrs.evolve(shim_settings, secret=secret))
    [signed] = signing.add_map(Task(executor="python"), [{"n": 2}])
    task = signing.get(signed)
    assert signing.signer is not None
    assert signing.signer.verify(task)
    with pytest.raises(ValidationError, match="cannot be stored"):  # signed before it is stored
        signing.add_map(Task(executor="python"), [{"n": 3}, {"n": object()}])
    assert signing.stats().total == 5
    assert check_invariants(shim_queue.client, shim_queue.keys) == []


def test_params_json_refuses_are_encoded_as_add_many_encodes_them(shim_queue):
    """A value plain JSON refuses (a datetime) goes through the converter, as in add_many."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    [mapped] = shim_queue.add_map(Task(), [{"when": when}])
    [alone] = shim_queue.add_many([Task(params={"when": when})])
    assert shim_queue.get(mapped).params == shim_queue.get(alone.id).params
