"""The built-in checkpoint backends (redis, filesystem) and the lease-fenced CheckpointStore."""

import json

import pytest

from shim_core import InvalidTransition, Keys, StaleLease, Task, TaskResult
from shim_core.checkpoints import CheckpointStore
from shim_core.contracts import Checkpoint, CheckpointBackend
from shim_plugins.checkpoints import (
    FilesystemCheckpointBackendFactory,
    RedisCheckpointBackendFactory,
)
from shim_plugins.checkpoints.filesystem import default_root
from shim_plugins.checkpoints.redis_backend import session_key
from tests.helpers import wait_until


@pytest.fixture(params=["redis", "filesystem"])
def backend(request, shim_connection, shim_settings, tmp_path, monkeypatch):
    """Each built-in backend on the test's namespace (files under tmp_path)."""
    monkeypatch.setenv("SHIM_CHECKPOINT_DIR", str(tmp_path))
    factory = {
        "redis": RedisCheckpointBackendFactory(),
        "filesystem": FilesystemCheckpointBackendFactory(),
    }[request.param]
    return factory.create(shim_connection, shim_settings)


def ckpt(task_id="t1", n=0, session_id="s1", at=None):
    return Checkpoint(
        id=f"{task_id}-c{n}",
        task_id=task_id,
        session_id=session_id,
        attempt=1,
        progress=n / 100,
        state={"step": n, "items": ["a", n]},
        created_at_ms=1_700_000_000_000 + n if at is None else at,
    )


def test_backend_satisfies_the_protocol(backend):
    """Both factories build a CheckpointBackend named after the factory."""
    assert isinstance(backend, CheckpointBackend)
    assert backend.name in ("redis", "filesystem")


def test_save_then_latest_round_trips(backend):
    """A saved checkpoint comes back equal from latest(); save returns its id."""
    assert backend.save(ckpt(n=1)) == "t1-c1"
    assert backend.latest("t1") == ckpt(n=1)


def test_latest_of_unknown_task_is_none(backend):
    """A task without checkpoints has no latest checkpoint."""
    assert backend.latest("nobody") is None


def test_latest_is_the_last_saved(backend):
    """After several saves, latest() is the most recent one."""
    for n in range(3):
        backend.save(ckpt(n=n))
    assert backend.latest("t1").id == "t1-c2"


def test_only_the_last_ten_are_kept(backend):
    """Saving twelve checkpoints keeps the newest ten of the task."""
    for n in range(12):
        backend.save(ckpt(n=n))
    kept = backend.for_session("s1")
    assert [c.id for c in kept] == [f"t1-c{n}" for n in range(11, 1, -1)]
    assert backend.delete("t1") == 10


def test_for_session_spans_tasks_newest_first(backend):
    """for_session returns the session's checkpoints of every task, newest first, and no others."""
    backend.save(ckpt("a", 1, at=100))
    backend.save(ckpt("b", 2, at=300))
    backend.save(ckpt("a", 3, at=200))
    backend.save(ckpt("c", 4, session_id="other", at=400))
    backend.save(ckpt("d", 5, session_id="", at=500))
    assert [c.id for c in backend.for_session("s1")] == ["b-c2", "a-c3", "a-c1"]
    assert [c.id for c in backend.for_session("other")] == ["c-c4"]
    assert backend.for_session("unknown") == []


def test_empty_backend_has_no_sessions(backend):
    """Before anything is saved, every session is empty."""
    assert backend.for_session("s1") == []


def test_delete_removes_a_tasks_checkpoints_and_counts_them(backend):
    """delete() returns how many checkpoints it removed; the task then has none, others stay."""
    backend.save(ckpt("a", 1))
    backend.save(ckpt("a", 2))
    backend.save(ckpt("b", 3))
    assert backend.delete("a") == 2
    assert backend.latest("a") is None
    assert [c.id for c in backend.for_session("s1")] == ["b-c3"]
    assert backend.delete("a") == 0


def test_task_ids_with_path_characters_stay_apart(backend):
    """Ids such as ``..`` or ``a:b.c`` are stored and found like any other."""
    for task_id in ("..", ".", "a:b.c", "a%2Eb"):
        backend.save(ckpt(task_id, 1))
    assert [backend.latest(t).task_id for t in ("..", ".", "a:b.c", "a%2Eb")] == [
        "..",
        ".",
        "a:b.c",
        "a%2Eb",
    ]
    assert backend.delete("..") == 1
    assert backend.latest(".").task_id == "."


def test_redis_layout_list_newest_first_and_session_set(shim_connection, shim_settings):
    """The redis backend keeps JSON in a list at Keys.ckpt, newest first, and a session set."""
    backend = RedisCheckpointBackendFactory().create(shim_connection, shim_settings)
    keys = Keys(shim_settings.namespace)
    client = shim_connection.get_client()
    backend.save(ckpt("t1", 1))
    backend.save(ckpt("t1", 2))
    entries = client.lrange(keys.ckpt("t1"), 0, -1)
    assert [json.loads(e)["id"] for e in entries] == ["t1-c2", "t1-c1"]
    assert client.smembers(session_key(keys, "s1")) == {"t1"}
    assert session_key(keys, "s1") == keys.prefix + "ckpt-session:s1"
    backend.delete("t1")
    assert client.exists(keys.ckpt("t1"), session_key(keys, "s1")) == 0


def test_redis_skips_a_corrupt_entry(shim_connection, shim_settings):
    """An undecodable entry in a task's list is skipped in favour of the next readable one."""
    backend = RedisCheckpointBackendFactory().create(shim_connection, shim_settings)
    backend.save(ckpt("t1", 1))
    shim_connection.get_client().lpush(Keys(shim_settings.namespace).ckpt("t1"), "{not json")
    assert backend.latest("t1").id == "t1-c1"
    assert backend.delete("t1") == 2


def test_filesystem_layout_and_atomic_files(shim_settings, tmp_path, monkeypatch):
    """Files live under $SHIM_CHECKPOINT_DIR/<namespace>/<task>/, one JSON each, no temp files."""
    monkeypatch.setenv("SHIM_CHECKPOINT_DIR", str(tmp_path))
    backend = FilesystemCheckpointBackendFactory().create(None, shim_settings)
    for n in range(12):
        backend.save(ckpt("t1", n))
    folder = tmp_path / shim_settings.namespace / "t1"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 10
    assert all(name.endswith(".json") and not name.startswith(".") for name in names)
    assert json.loads((folder / names[-1]).read_text())["id"] == "t1-c11"


def test_filesystem_skips_a_corrupt_file(shim_settings, tmp_path):
    """A damaged checkpoint file is skipped; the next newest one is returned."""
    backend = FilesystemCheckpointBackendFactory(env={"SHIM_CHECKPOINT_DIR": str(tmp_path)})
    store = backend.create(None, shim_settings)
    store.save(ckpt("t1", 1))
    (tmp_path / shim_settings.namespace / "t1" / "9999999999-x.json").write_text("{oops")
    assert store.latest("t1").id == "t1-c1"


def test_filesystem_default_root_is_under_the_home_directory(monkeypatch, tmp_path):
    """Without SHIM_CHECKPOINT_DIR the root is ~/.shim/checkpoints."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_root({}) == tmp_path / ".shim" / "checkpoints"
    assert default_root({"SHIM_CHECKPOINT_DIR": "/data/ckpt"}).as_posix() == "/data/ckpt"


def test_store_saves_with_the_current_lease(shim_queue, shim_connection, shim_settings):
    """CheckpointStore.save succeeds for the lease holder and the backend then has the state."""
    store = CheckpointStore(
        RedisCheckpointBackendFactory().create(shim_connection, shim_settings), shim_queue
    )
    shim_queue.add(Task(id="a"))
    (claim,) = shim_queue.claim(["code"], worker_id="w1")
    checkpoint_id = store.save("a", claim.token, {"step": 2}, progress=0.5, attempt=1)
    latest = store.latest("a")
    assert (latest.id, latest.state, latest.progress) == (checkpoint_id, {"step": 2}, 0.5)


def test_store_refuses_a_stale_lease(shim_queue, shim_connection, shim_settings):
    """After the lease expired and another worker claimed the task, the old token raises
    StaleLease and nothing is saved; the new holder can save."""
    store = CheckpointStore(
        RedisCheckpointBackendFactory().create(shim_connection, shim_settings), shim_queue
    )
    shim_queue.add(Task(id="a"))
    (first,) = shim_queue.claim(["code"], worker_id="w1", lease_ms=1)
    wait_until(shim_queue.reap_stalled)
    (second,) = shim_queue.claim(["code"], worker_id="w2")
    with pytest.raises(StaleLease):
        store.save("a", first.token, {"step": 9})
    assert store.latest("a") is None
    store.save("a", second.token, {"step": 1})
    assert store.latest("a").state == {"step": 1}


def test_store_refuses_a_finished_task(shim_queue, shim_connection, shim_settings):
    """A checkpoint for a task that already completed is refused even with its last lease."""
    store = CheckpointStore(
        RedisCheckpointBackendFactory().create(shim_connection, shim_settings), shim_queue
    )
    shim_queue.add(Task(id="a"))
    (claim,) = shim_queue.claim(["code"], worker_id="w1")
    shim_queue.complete("a", claim.token, TaskResult(success=True))
    with pytest.raises(InvalidTransition):
        store.save("a", claim.token, {"step": 1})


def test_store_over_a_backend_without_fencing_still_refuses_a_stale_lease(
    shim_queue, shim_connection, shim_settings, tmp_path, monkeypatch
):
    """With a backend that cannot check the lease itself (filesystem), the store checks it
    before writing: an old token raises StaleLease and nothing is saved."""
    monkeypatch.setenv("SHIM_CHECKPOINT_DIR", str(tmp_path))
    store = CheckpointStore(
        FilesystemCheckpointBackendFactory().create(shim_connection, shim_settings), shim_queue
    )
    shim_queue.add(Task(id="a"))
    (first,) = shim_queue.claim(["code"], worker_id="w1", lease_ms=1)
    wait_until(shim_queue.reap_stalled)
    (second,) = shim_queue.claim(["code"], worker_id="w2")
    with pytest.raises(StaleLease):
        store.save("a", first.token, {"step": 9})
    assert store.latest("a") is None
    store.save("a", second.token, {"step": 1})
    assert store.latest("a").state == {"step": 1}


def test_redis_fenced_save_writes_nothing_for_a_stale_lease(
    shim_queue, shim_connection, shim_settings
):
    """The redis backend's save_leased saves only for the current lease holder."""
    backend = RedisCheckpointBackendFactory().create(shim_connection, shim_settings)
    shim_queue.add(Task(id="a"))
    (claim,) = shim_queue.claim(["code"], worker_id="w1")
    assert backend.save_leased(ckpt("a", 1), claim.token + 1) is None
    assert backend.latest("a") is None
    assert backend.save_leased(ckpt("a", 2), claim.token) == ckpt("a", 2).id
