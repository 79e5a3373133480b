"""With ``redis_functions`` (opt-in, Redis 7) the scripts run as one function library
(``FCALL``), loaded once per server; where the server has no library, loses it, refuses a call
up front or the user may not use it, they run by EVALSHA with the same results. Each test has
a redis-server of its own: they count the server's commands."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pytest_shim import RedisServer
from shim_core import Settings, Task, TaskQueue, TaskResult, TaskStatus, scripts
from shim_core.connection import RedisConnectionManager
from shim_core.doctor import check_invariants
from shim_core.scripts import function_library, sources

pytestmark = pytest.mark.shim_real_redis


@pytest.fixture
def server(shim_redis_server_factory: Callable[..., RedisServer]) -> Iterator[redis.Redis]:
    """An admin client on a redis-server of the test's own."""
    admin = redis.Redis(port=shim_redis_server_factory().port)
    yield admin
    admin.close()


@contextlib.contextmanager
def _queue(admin: redis.Redis, functions: bool = True, user: str = "") -> Iterator[TaskQueue]:
    port = admin.connection_pool.connection_kwargs["port"]
    settings = Settings(
        redis_url=f"redis://{user}127.0.0.1:{port}/0", namespace="f", redis_functions=functions
    )
    connection = RedisConnectionManager(settings.redis_url)
    connection.connect()
    try:
        yield TaskQueue(connection, settings)
    finally:
        connection.disconnect()


@pytest.fixture
def queue(server: redis.Redis) -> Iterator[TaskQueue]:
    with _queue(server) as made:
        yield made


def _calls(client: Any) -> dict[str, int]:
    """Server-side calls so far, per command (fcall, evalsha, function|load...)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _grew(before: dict[str, int], after: dict[str, int], command: str) -> int:
    return after.get(command, 0) - before.get(command, 0)


def _lifecycle(queue: TaskQueue, tag: str) -> None:
    """Add, claim and complete a task and its dependent (counts, events, DAG release)."""
    queue.add_many([Task(id=f"{tag}a"), Task(id=f"{tag}b", dependencies=(f"{tag}a",))])
    queue.add_map(Task(type="mapped"), [{"n": 1}, {"n": 2}])
    for task_id in (f"{tag}a", f"{tag}b"):
        (claim,) = queue.claim(["code"], worker_id="w1")
        assert claim.task.id == task_id
        queue.complete(task_id, claim.token, TaskResult(success=True, output={"ok": True}))


def _warm(queue: TaskQueue) -> None:
    """The first call on a new server finds no library (it runs by EVALSHA); the next loads it
    and calls it."""
    queue.add_many([Task(id="warm1", type="other")])
    queue.add_many([Task(id="warm2", type="other")])
    assert queue.scripts.functions() == function_library().functions


def test_the_library_holds_every_script_and_is_named_after_its_code() -> None:
    library = function_library()
    assert set(library.functions) == set(sources())
    assert library.code.startswith(f"#!lua name={library.name}\n")
    assert all(name.startswith(f"{library.name}_") for name in library.functions.values())


def test_the_library_code_reads_no_keys_or_argv_of_its_own() -> None:
    """A function sees its keys and arguments as parameters only: the shared library must take
    them as arguments too (a script's KEYS / ARGV globals do not exist in a function)."""
    lib = (Path(scripts.__file__).parent / "lua" / "_lib.lua").read_text(encoding="utf-8")
    assert re.findall(r"\b(?:KEYS|ARGV)\b", re.sub(r"--[^\n]*", "", lib)) == []


def test_without_the_setting_no_library_is_loaded(server: redis.Redis) -> None:
    """Opt-in: a library is server-wide and replaceable by name by any user allowed
    function|load, where EVALSHA runs exactly the code its hash names."""
    with _queue(server, functions=False) as default:
        _lifecycle(default, "d")
    assert server.function_list() == []
    assert "fcall" not in _calls(server)


def test_calls_go_through_the_library_and_keep_every_invariant(
    server: redis.Redis, queue: TaskQueue
) -> None:
    """The first call finds no library and the next loads it; from then on every script call
    is an FCALL. The state is the same as by EVALSHA (counts, sets, events), and two calls in
    a row share nothing (each starts with fresh gathered writes)."""
    _warm(queue)
    before = _calls(server)
    _lifecycle(queue, "x")
    after = _calls(server)
    assert _grew(before, after, "fcall") >= 5
    assert _grew(before, after, "evalsha") == 0
    assert _grew(before, after, "function|load") == 0
    assert [t.status for t in queue.get_many(["xa", "xb"])] == [TaskStatus.COMPLETE] * 2
    assert queue.stats().by_type["code"] == {"complete": 2}
    assert queue.stats().by_type["mapped"] == {"pending": 2}
    assert check_invariants(queue.client, queue.keys) == []


def test_a_server_that_lost_its_functions_gets_them_again(
    server: redis.Redis, queue: TaskQueue
) -> None:
    """FUNCTION FLUSH (as a restart without persistence does): the next call runs by EVALSHA
    and the library is loaded again for the calls after it."""
    _warm(queue)
    server.function_flush()
    before = _calls(server)
    _lifecycle(queue, "y")
    after = _calls(server)
    # the call that found no function, by EVALSHA (twice: after a NOSCRIPT, the script loaded)
    assert 1 <= _grew(before, after, "evalsha") <= 2
    assert _grew(before, after, "function|load") == 1
    assert _grew(before, after, "fcall") >= 4
    assert queue.stats().by_type["code"] == {"complete": 2}
    assert check_invariants(queue.client, queue.keys) == []


def test_a_call_refused_for_lack_of_memory_runs_by_evalsha(
    server: redis.Redis, queue: TaskQueue
) -> None:
    """Out of memory, Redis refuses a function that may write before it runs; a script runs
    until a write that needs memory. A claim on an empty queue only reads and deletes: it
    still answers, as it does by EVALSHA."""
    _warm(queue)
    server.config_set("maxmemory", 1)  # noeviction (the default): every memory write refused
    try:
        before = _calls(server)
        assert queue.claim(["code"], worker_id="w1") == []
        after = _calls(server)
    finally:
        server.config_set("maxmemory", 0)
    assert _grew(before, after, "evalsha") >= 1
    assert queue.scripts.functions()  # still in use once memory is back
    queue.add(Task(id="after"))
    assert [c.task.id for c in queue.claim(["code"], worker_id="w1")] == ["after"]


@pytest.mark.parametrize("refused", ["+function|load", "+fcall", "no FCALL command"])
def test_without_functions_the_scripts_run_by_evalsha(
    shim_redis_server_factory: Callable[..., RedisServer], refused: str
) -> None:
    """A user without ``function|load`` never loads the library; without ``fcall``, or on a
    server that has no FCALL (Redis 6, here a renamed command), the first refused call turns
    the client to EVALSHA for good (no second try per call). Nothing else changes."""
    if refused.startswith("+"):
        port = shim_redis_server_factory().port
        rule = f"-{refused[1:]}"
    else:
        port = shim_redis_server_factory(args=["--rename-command", "FCALL", ""]).port
        rule = "+@all"
    admin = redis.Redis(port=port)
    admin.execute_command("ACL", "SETUSER", "u", "on", ">pw", "~*", "&*", "+@all", rule)
    try:
        with _queue(admin, user="u:pw@") as queue:
            before = _calls(admin)
            _lifecycle(queue, "z")
            _lifecycle(queue, "w")
            after = _calls(admin)
            # at most the first one, which found no library (a refused command is not counted)
            assert _grew(before, after, "fcall") <= 1
            assert _grew(before, after, "evalsha") >= 10
            assert queue.scripts.functions() == {}
            assert queue.stats().by_type == {"code": {"complete": 4}, "mapped": {"pending": 4}}
            assert check_invariants(queue.client, queue.keys) == []
    finally:
        admin.close()
