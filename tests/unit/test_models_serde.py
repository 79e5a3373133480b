"""Models, (de)serialisation, key names and URL masking: the pure parts every component uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim_core import serde
from shim_core.errors import ConfigError, CorruptTask, ShimError, TaskError
from shim_core.keys import Keys, check_name
from shim_core.models import (
    EventType,
    Priority,
    ProgressEvent,
    ProgressInfo,
    Task,
    TaskContext,
    TaskResult,
    TaskStatus,
)
from shim_core.redact import mask_url
from shim_core.serde import (
    dumps,
    event_from_json,
    finite,
    from_ms,
    loads,
    task_from_hash,
    task_to_hash,
    to_ms,
)

CREATED = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
CREATED_MS = 1_704_164_645_678


def full_task() -> Task:
    return Task(
        id="t-1",
        type="research",
        title="Find the bug",
        description="multi\nline",
        priority=Priority.HIGH,
        dependencies=("d1", "d2"),
        parent_task_id="parent",
        context=TaskContext(
            files=("a.py", "b/c.py"), checkpoint_id="ck", session_id="s1", project_path="/src"
        ),
        executor="shell",
        params={"cmd": ["ls", "-l"], "nested": {"n": 1.5, "none": None, "ok": True}, "é": "ü"},
        assigned_to="worker-7",
        max_attempts=5,
        backoff_ms=250,
        timeout_ms=60_000,
        run_id="run-1",
        status=TaskStatus.COMPLETE,
        attempts=2,
        lease=17,
        worker_id="worker-7",
        progress=1.0,
        progress_message="done",
        result=TaskResult(
            success=True,
            output={"rows": [1, 2, {"k": None}]},
            files_modified=("a.py",),
            duration_ms=1234,
        ),
        created_at=CREATED,
        claimed_at=CREATED + timedelta(seconds=1),
        completed_at=CREATED + timedelta(seconds=3, milliseconds=5),
        actual_duration=2005,
    )


# ---------------------------------------------------------------- task hashes
def test_task_hash_round_trip_with_nested_values() -> None:
    """A task with nested context, params, result and datetimes decodes back to an equal task."""
    task = full_task()

    fields = task_to_hash(task)

    assert all(isinstance(v, str) for v in fields.values())
    assert task_from_hash(fields) == task


def test_string_fields_are_stored_bare_and_others_as_json() -> None:
    """str and str-enum fields are stored as the plain string; other fields as compact JSON."""
    fields = task_to_hash(full_task())

    assert fields["title"] == "Find the bug"
    assert fields["priority"] == "high"
    assert fields["status"] == "complete"
    assert fields["assigned_to"] == "worker-7"
    assert fields["dependencies"] == '["d1","d2"]'
    assert fields["attempts"] == "2"
    assert json.loads(fields["context"]) == {
        "files": ["a.py", "b/c.py"],
        "checkpoint_id": "ck",
        "session_id": "s1",
        "project_path": "/src",
    }
    assert json.loads(fields["params"])["nested"] == {"n": 1.5, "none": None, "ok": True}
    assert json.loads(fields["result"])["output"] == {"rows": [1, 2, {"k": None}]}


@pytest.mark.parametrize(
    "params",
    [
        {"n": 1, "f": 1.5, "s": "x", "list": [1, "a", None], "tuple": (1, 2), "ok": False},
        {"priority": Priority.HIGH, "rows": [{"deep": [TaskStatus.RUNNING]}]},
        {"when": datetime(2026, 1, 2, tzinfo=UTC), "blob": b"\x00\x01", "set": {3}},
        {"context": TaskContext(files=("a.py",)), "nan": float("nan")},
    ],
)
def test_params_encode_as_the_converter_encodes_them(params: dict[str, object]) -> None:
    """Plain JSON params skip the converter; the stored string is the converter's either way
    (values json refuses, such as bytes, datetimes, sets and attrs values, go through it)."""
    stored = task_to_hash(Task(id="p", params=params))["params"]

    assert stored == json.dumps(serde.converter.unstructure(params), separators=(",", ":"))


def test_dependencies_encode_as_the_converter_encodes_them() -> None:
    stored = task_to_hash(Task(id="p", dependencies=("a", "b.c")))["dependencies"]

    assert stored == '["a","b.c"]'


def test_strings_that_look_like_json_survive_the_round_trip() -> None:
    """A title like ``null`` or ``[1]`` stays a string (bare strings are never JSON-decoded)."""
    task = Task(id="t", title="null", description="[1]", executor="42", progress_message='"q"')

    assert task_from_hash(task_to_hash(task)) == task


def test_datetimes_are_epoch_milliseconds() -> None:
    """Datetimes are stored as integer epoch milliseconds and decode to aware UTC datetimes."""
    fields = task_to_hash(full_task())

    assert fields["created_at"] == str(CREATED_MS)
    assert fields["completed_at"] == str(CREATED_MS + 3005)
    decoded = task_from_hash(fields).created_at
    assert decoded == CREATED
    assert decoded is not None
    assert decoded.tzinfo is UTC


def test_to_ms_and_from_ms() -> None:
    """to_ms truncates to milliseconds, reads naive datetimes as UTC and honours other offsets."""
    assert to_ms(CREATED) == CREATED_MS
    assert to_ms(CREATED.replace(microsecond=678_999)) == CREATED_MS
    assert to_ms(CREATED.replace(tzinfo=None)) == CREATED_MS
    plus_two = CREATED.astimezone(timezone(timedelta(hours=2)))
    assert to_ms(plus_two) == CREATED_MS
    assert from_ms(CREATED_MS) == CREATED
    assert from_ms(str(CREATED_MS)) == CREATED
    assert from_ms(f"{CREATED_MS}.0") == CREATED
    assert from_ms(0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_none_fields_are_omitted() -> None:
    """Fields whose value is None are left out of the hash, and come back as None."""
    task = Task(id="t")

    fields = task_to_hash(task)

    for name in (
        "parent_task_id",
        "executor",
        "assigned_to",
        "max_attempts",
        "result",
        "created_at",
        "claimed_at",
        "completed_at",
        "due_at",
        "lease_deadline",
        "actual_duration",
        "run_id",
        "worker_id",
    ):
        assert name not in fields, name
    assert fields["id"] == "t"
    assert task_from_hash(fields) == task


def test_hash_written_by_lua_decodes() -> None:
    """A hash as the Lua scripts leave it (numbers as strings, bookkeeping fields) decodes."""
    fields = {
        "id": "t1",
        "type": "code",
        "status": "running",
        "priority": "low",
        "attempts": "1",
        "lease": "42",
        "progress": "0.5",
        "progress_message": "",
        "claimed_at": str(CREATED_MS),
        "lease_deadline": str(CREATED_MS + 30_000),
        "seq": "7",  # bookkeeping field, not a Task attribute
    }

    task = task_from_hash(fields, "t1")

    assert task.status is TaskStatus.RUNNING
    assert task.priority is Priority.LOW
    assert (task.attempts, task.lease, task.progress) == (1, 42, 0.5)
    assert task.claimed_at == CREATED
    assert task.lease_deadline == CREATED + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"id": "t9", "priority": "urgent"}, "priority ('urgent' is not a valid Priority)"),
        ({"id": "t9", "params": "{not json"}, "params (not JSON: Expecting property name"),
        ({"id": "t9", "params": "[1, 2]"}, "params (not a JSON object)"),
        ({"id": "t9", "attempts": '"x"'}, "attempts ("),
        ({"id": "t9", "created_at": '"yesterday"'}, "created_at ("),
        ({"id": "t9", "status": "lost"}, "status ('lost' is not a valid TaskStatus)"),
        ({"id": "t9", "context": '{"files": 3}'}, "context ("),
    ],
)
def test_corrupt_hash_raises_corrupt_task_naming_the_field(
    fields: dict[str, str], detail: str
) -> None:
    """A hash that does not decode raises CorruptTask naming the task and the field at fault."""
    with pytest.raises(CorruptTask) as info:
        task_from_hash(fields, "t9")

    assert info.value.task_id == "t9"
    assert str(info.value).startswith("corrupt task data: ")
    assert detail in str(info.value)
    assert isinstance(info.value, TaskError)
    assert isinstance(info.value, ShimError)


def test_corrupt_hash_names_the_stored_id_when_none_is_given() -> None:
    """Without an explicit task id the error names the hash's own id field, else '?'."""
    with pytest.raises(CorruptTask) as info:
        task_from_hash({"id": "own-id", "priority": "bad"})
    assert info.value.task_id == "own-id"

    with pytest.raises(CorruptTask) as info:
        task_from_hash({"priority": "bad"})
    assert info.value.task_id == "?"


# --------------------------------------------------------------------- events
def test_event_from_json_decodes_a_progress_event() -> None:
    """A progress event as the Lua scripts publish it decodes to a ProgressEvent."""
    raw = json.dumps(
        {
            "id": "12",
            "type": "progress",
            "task_id": "t1",
            "worker_id": "w1",
            "status": "running",
            "attempt": 1,
            "timestamp": CREATED_MS,
            "progress": {"current": 50, "total": 100, "percentage": 0.5, "message": "half"},
        }
    )

    event = event_from_json(raw)

    assert event == ProgressEvent(
        id="12",
        type=EventType.PROGRESS,
        task_id="t1",
        worker_id="w1",
        status=TaskStatus.RUNNING,
        attempt=1,
        timestamp=CREATED,
        progress=ProgressInfo(current=50, total=100, percentage=0.5, message="half"),
    )


def test_event_from_json_decodes_bytes_and_completion() -> None:
    """Bytes input and a completion payload (with omitted optional fields) decode."""
    raw = (
        b'{"id":"3","type":"completed","task_id":"t1","status":"complete",'
        b'"completion":{"success":true,"output":{"answer":42}}}'
    )

    event = event_from_json(raw)

    assert event.type is EventType.COMPLETED
    assert event.completion == TaskResult(success=True, output={"answer": 42})
    assert event.worker_id == ""
    assert event.timestamp is None


def test_event_json_round_trip() -> None:
    """dumps / event_from_json round-trip a full event (timestamp as epoch ms on the wire)."""
    event = ProgressEvent(
        id="e1",
        type=EventType.FAILED,
        task_id="t",
        worker_id="w",
        status=TaskStatus.FAILED,
        attempt=3,
        completion=TaskResult(success=False, error="boom"),
        timestamp=CREATED,
    )

    wire = dumps(event)

    assert json.loads(wire)["timestamp"] == CREATED_MS
    assert event_from_json(wire) == event
    assert loads(wire, ProgressEvent) == event


def test_event_from_json_refuses_garbage() -> None:
    """Non-JSON raises a JSON error; JSON of the wrong shape raises a cattrs validation error."""
    with pytest.raises(json.JSONDecodeError):
        event_from_json("not json")
    with pytest.raises(cattrs.errors.ClassValidationError):
        event_from_json('{"id": "1", "type": "exploded"}')
    with pytest.raises(cattrs.errors.ClassValidationError):
        event_from_json('{"type": "progress"}')  # id is required


# ------------------------------------------------------------ enums and tasks
def test_priority_bands_order_critical_first() -> None:
    """Bands run 0 (critical) to 3 (low), so sorting by band gives strict priority order."""
    assert [p.band for p in Priority] == [0, 1, 2, 3]
    shuffled = [Priority.LOW, Priority.CRITICAL, Priority.NORMAL, Priority.HIGH]
    assert sorted(shuffled, key=lambda p: p.band) == [
        Priority.CRITICAL,
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
    ]
    assert Priority.CRITICAL.band < Priority.HIGH.band < Priority.NORMAL.band < Priority.LOW.band


@pytest.mark.parametrize(
    ("status", "final", "active"),
    [
        (TaskStatus.WAITING, False, False),
        (TaskStatus.PENDING, False, False),
        (TaskStatus.CLAIMED, False, True),
        (TaskStatus.RUNNING, False, True),
        (TaskStatus.RETRYING, False, False),
        (TaskStatus.COMPLETE, True, False),
        (TaskStatus.FAILED, True, False),
        (TaskStatus.CANCELLED, True, False),
    ],
)
def test_status_is_final_and_is_active(status: TaskStatus, final: bool, active: bool) -> None:
    """Only complete/failed/cancelled are final and only claimed/running are active."""
    assert status.is_final is final
    assert status.is_active is active


def test_task_queue_is_type_or_assigned_worker() -> None:
    """A task waits in its type's queue, or in ``@<worker>`` when assigned to one."""
    assert Task(type="test").queue == "test"
    assert Task(type="test", assigned_to="w1").queue == "@w1"


def test_evolve_task_is_attrs_evolve_and_leaves_the_original_alone() -> None:
    task = Task(id="e1", title="before", params={"a": 1}, dependencies=("d",))
    changes = {"title": "after", "max_attempts": 4, "status": TaskStatus.RUNNING}
    evolved = serde.evolve_task(task, changes)
    assert evolved == attrs.evolve(task, **changes)
    assert type(evolved) is Task
    assert (task.title, task.max_attempts, task.status) == ("before", None, TaskStatus.PENDING)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        evolved.title = "changed"  # type: ignore[misc]


def test_task_has_no_validator_converter_or_init_hook_for_evolve_task_to_skip() -> None:
    assert all(f.validator is None and f.converter is None for f in attrs.fields(Task))
    assert not hasattr(Task, "__attrs_pre_init__")
    assert not hasattr(Task, "__attrs_post_init__")


def test_evolve_task_refuses_what_is_not_a_field() -> None:
    with pytest.raises(TypeError, match="not Task fields: \\['nope'\\]"):
        serde.evolve_task(Task(id="e2"), {"title": "x", "nope": 1})


def test_new_tasks_get_distinct_ids() -> None:
    """Each Task made without an id gets a fresh 32-hex-digit id."""
    a, b = Task(), Task()
    assert a.id != b.id
    assert len(a.id) == 32
    int(a.id, 16)


# ----------------------------------------------------------------------- keys
def _all_keys(keys: Keys) -> list[str]:
    names = [
        keys.waiting,
        keys.delayed,
        keys.active,
        keys.complete,
        keys.failed,
        keys.cancelled,
        keys.queues,
        keys.counts,
        keys.paused,
        keys.seq,
        keys.fence,
        keys.workers,
    ]
    names += [
        keys.task("t1"),
        keys.ready("code"),
        keys.ready("@w1"),
        keys.wake("code"),
        keys.dependents("t1"),
        keys.ckpt("t1"),
        keys.worker("w1"),
        keys.run("r1"),
        keys.channel("task:progress"),
    ]
    return names


@pytest.mark.parametrize("namespace", ["default", "team-a", "a.b_c"])
def test_every_key_carries_the_hash_tag(namespace: str) -> None:
    """Every key and channel starts with ``shim:{ns}:``: a namespace lives on one cluster slot."""
    keys = Keys(namespace)

    for key in _all_keys(keys):
        assert key.startswith(f"shim:{{{namespace}}}:"), key
        assert key.count("{") == key.count("}") == 1, key
    assert len(set(_all_keys(keys))) == len(_all_keys(keys))


def test_key_layout() -> None:
    """Keys follow the documented layout (the Lua scripts build the same strings)."""
    keys = Keys("default")

    assert keys.prefix == "shim:{default}:"
    assert keys.task("t1") == "shim:{default}:task:t1"
    assert keys.ready("@w1") == "shim:{default}:ready:@w1"
    assert keys.channel("task:progress") == "shim:{default}:task:progress"
    assert keys.task_pattern() == "shim:\\{default\\}:task:*"


def test_keys_refuse_a_bad_namespace() -> None:
    """Keys cannot be built for an invalid namespace."""
    with pytest.raises(ConfigError, match="invalid namespace"):
        Keys("a}b")


@pytest.mark.parametrize(
    "name", ["", " ", "a b", "-a", ".a", "_a", "a{b", "a}b", "a:b", "a/b", "a*", "é", "a" * 65]
)
def test_check_name_rejects_bad_names(name: str) -> None:
    """check_name refuses empty, too long, badly started or unsafe-character names."""
    with pytest.raises(ConfigError, match=r"invalid worker id .*1-64 letters"):
        check_name("worker id", name)


@pytest.mark.parametrize("name", ["a", "A1", "w-1.x_y", "9", "a" * 64])
def test_check_name_returns_good_names(name: str) -> None:
    """check_name returns a valid name unchanged."""
    assert check_name("task type", name) == name


def test_check_name_rejects_trailing_newline() -> None:
    """A name ending in a newline is refused (it would put a newline into every key)."""
    with pytest.raises(ConfigError):
        check_name("namespace", "team\n")


# ------------------------------------------------------------------ mask_url
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:pw@h", "redis://user:***@h"),
        ("redis://user:pw@h:6379/2", "redis://user:***@h:6379/2"),
        ("rediss://:pw@h", "rediss://:***@h"),
        ("rediss://:p%40ss%3Aw0rd@h:6380/0", "rediss://:***@h:6380/0"),
        ("redis://user:p@ss@h", "redis://user:***@h"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://user@h", "redis://user@h"),
        ("unix:///tmp/redis.sock?db=1", "unix:///tmp/redis.sock?db=1"),
        ("embedded://", "embedded://"),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0",
            "redis+sentinel://:***@s1:26379,s2:26379/mymaster/0",
        ),
        ("redis+sentinel://u:pw@s1:26379/mymaster", "redis+sentinel://u:***@s1:26379/mymaster"),
        ("redis+sentinel://s1:26379,s2/mymaster", "redis+sentinel://s1:26379,s2/mymaster"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """mask_url replaces any password with *** and leaves password-less URLs unchanged."""
    assert mask_url(url) == masked


def test_mask_url_of_an_unparseable_url() -> None:
    """A URL that cannot be parsed still has its password masked (masking works on the text)."""
    assert "secret" not in mask_url("redis://:secret@[::1")


def test_mask_url_hides_a_query_string_password() -> None:
    """A password given as ``?password=`` (accepted by redis-py) is hidden as well."""
    assert "s3cret" not in mask_url("redis://h:6379/0?password=s3cret")


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_from_json_are_refused(word: str) -> None:
    """Python's json reads NaN and Infinity; no decoded field takes them (one would break
    every JSON view of the data: the browser's JSON.parse refuses NaN)."""
    raw = (
        '{"id":"1","type":"progress","task_id":"t",'
        f'"progress":{{"current":1,"total":2,"percentage":{word}}}}}'
    )
    with pytest.raises(cattrs.ClassValidationError):
        event_from_json(raw)
    assert finite("0.25") == 0.25
    with pytest.raises(ValueError, match="not a finite number"):
        finite(word.lower())


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None)  # a pause of the shared machine is no failure
@given(_JSON)
def test_compact_json_is_json_dumps_with_compact_separators(value: object) -> None:
    """The encoder made once gives the string json.dumps gives (signatures depend on it)."""
    assert serde.compact_json(value) == json.dumps(value, separators=(",", ":"))


def test_compact_json_refuses_what_json_refuses() -> None:
    for value in ({"s": {1}}, b"raw", object()):
        with pytest.raises(TypeError):
            serde.compact_json(value)
