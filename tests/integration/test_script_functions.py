"""On Redis 7 the scripts run as one function library (``FCALL``), loaded once per server; where
the server has no library, or loses it, or the user may not load it, they run by EVALSHA with
the same results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis

from shim_core import Settings, Task, TaskQueue, TaskResult, TaskStatus, scripts
from shim_core.connection import RedisConnectionManager
from shim_core.doctor import check_invariants
from shim_core.scripts import function_library, sources

pytestmark = pytest.mark.shim_real_redis


def _calls(client: Any) -> dict[str, int]:
    """Server-side calls so far, per command (fcall, evalsha, function|load...)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _lifecycle(queue: TaskQueue, tag: str) -> None:
    """Add, claim and complete a task and its dependent (counts, events, DAG release)."""
    queue.add_many([Task(id=f"{tag}a"), Task(id=f"{tag}b", dependencies=(f"{tag}a",))])
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


def test_calls_go_through_the_library_and_keep_every_invariant(shim_queue: TaskQueue) -> None:
    """The first call finds no library and loads it; from then on every script call is an
    FCALL. The state is the same as by EVALSHA (counts, sets, events), and two calls in a row
    share nothing (each starts with fresh gathered writes)."""
    client = shim_queue.client
    _warm(shim_queue)
    before = _calls(client)
    _lifecycle(shim_queue, "x")
    after = _calls(client)
    assert after.get("fcall", 0) - before.get("fcall", 0) >= 5
    assert after.get("evalsha", 0) == before.get("evalsha", 0)
    assert after.get("function|load", 0) == before.get("function|load", 0)
    assert function_library().name.encode() in str(client.function_list()).encode()
    assert [t.status for t in shim_queue.get_many(["xa", "xb"])] == [TaskStatus.COMPLETE] * 2
    assert shim_queue.stats().by_type["code"] == {"complete": 2}
    assert check_invariants(client, shim_queue.keys) == []


def test_a_server_that_lost_its_functions_gets_them_again(shim_queue: TaskQueue) -> None:
    """FUNCTION FLUSH (as a restart without persistence does): the next call runs by EVALSHA
    and the library is loaded again for the calls after it."""
    client = shim_queue.client
    _warm(shim_queue)
    client.function_flush()
    before = _calls(client)
    _lifecycle(shim_queue, "y")
    after = _calls(client)
    # the call that found no function, by EVALSHA (twice: after a NOSCRIPT, the script loaded)
    assert 1 <= after.get("evalsha", 0) - before.get("evalsha", 0) <= 2
    assert after.get("function|load", 0) - before.get("function|load", 0) == 1
    assert after.get("fcall", 0) - before.get("fcall", 0) >= 4
    assert shim_queue.stats().by_type["code"] == {"complete": 2}
    assert check_invariants(client, shim_queue.keys) == []


@pytest.mark.parametrize("refused", ["+function|load", "+fcall", "no FCALL command"])
def test_without_functions_the_scripts_run_by_evalsha(
    shim_redis_server_factory: Any, refused: str
) -> None:
    """A user without ``function|load`` never loads the library; without ``fcall``, or on a
    server that has no FCALL (Redis 6, here a renamed command), the first refused call turns
    the client to EVALSHA for good (no second try per call). Nothing else changes."""
    if refused.startswith("+"):
        server = shim_redis_server_factory()
        rule = f"-{refused[1:]}"
    else:
        server = shim_redis_server_factory(args=["--rename-command", "FCALL", ""])
        rule = "+@all"
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "u", "on", ">pw", "~*", "&*", "+@all", rule)
    settings = Settings(redis_url=f"redis://u:pw@127.0.0.1:{server.port}/0", namespace="f")
    connection = RedisConnectionManager(settings.redis_url)
    connection.connect()
    try:
        queue = TaskQueue(connection, settings)
        before = _calls(admin)
        _lifecycle(queue, "z")
        _lifecycle(queue, "w")
        after = _calls(admin)
        # at most the first one, which found no library (a refused command is not counted)
        assert after.get("fcall", 0) - before.get("fcall", 0) <= 1
        assert after.get("evalsha", 0) - before.get("evalsha", 0) >= 10
        assert queue.scripts.functions() == {}
        assert queue.stats().by_type == {"code": {"complete": 4}}
        assert check_invariants(queue.client, queue.keys) == []
    finally:
        connection.disconnect()
        admin.close()


def test_the_library_code_reads_no_keys_or_argv_of_its_own() -> None:
    """A function sees its keys and arguments as parameters only: the shared library must take
    them as arguments too (a script's KEYS / ARGV globals do not exist in a function)."""
    lib = (Path(scripts.__file__).parent / "lua" / "_lib.lua").read_text(encoding="utf-8")
    code = re.sub(r"--[^\n]*", "", lib)
    assert re.findall(r"\b(?:KEYS|ARGV)\b", code) == []
