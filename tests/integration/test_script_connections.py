"""Script calls keep one pooled connection per thread (``HeldConnections``) instead of taking one
from the pool and giving it back on every call; a thread's connection goes back when the thread
ends, and one that broke is never used again. A worker's settle calls are written ahead of their
replies on a connection of their own (``ScriptLine``), with the same fallbacks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from shim_core import Task, TaskQueue
from shim_core.models import Claim, TaskResult, TaskStatus
from shim_core.scripts import ScriptLine
from tests.helpers import wait_until

#: Held connections are for sockets: the embedded store goes through redis-py's command layer.
pytestmark = pytest.mark.shim_real_redis


def _pool(queue: TaskQueue) -> Any:
    return queue.client.connection_pool


def _in_use(queue: TaskQueue) -> int:
    return len(_pool(queue)._in_use_connections)


def test_calls_of_one_thread_share_one_connection(shim_queue: TaskQueue) -> None:
    """A hundred calls from one thread open one connection and keep it between calls."""
    shim_queue.add(Task(id="first"))
    before = (_pool(shim_queue)._created_connections, _in_use(shim_queue))
    for n in range(100):
        shim_queue.add(Task(id=f"t{n}"))
    assert (_pool(shim_queue)._created_connections, _in_use(shim_queue)) == before
    assert _in_use(shim_queue) >= 1
    assert shim_queue.stats().pending == 101


def test_a_thread_gives_its_connection_back_when_it_ends(shim_queue: TaskQueue) -> None:
    """Threads that made calls hold a connection each while they live, none once they ended."""
    shim_queue.add(Task(id="warm"))
    baseline = _in_use(shim_queue)
    started = threading.Barrier(4)
    finish = threading.Event()

    def work(n: int) -> None:
        shim_queue.add(Task(id=f"thread-{n}"))
        started.wait()
        finish.wait()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    started.wait()
    assert _in_use(shim_queue) == baseline + 3
    finish.set()
    for thread in threads:
        thread.join()
    assert _in_use(shim_queue) == baseline
    assert shim_queue.stats().pending == 4


def test_a_killed_connection_is_replaced(shim_queue: TaskQueue) -> None:
    """When the server closes the held connection, the call still succeeds (redis-py's path
    reconnects), the broken connection goes back to the pool, and later calls use a new one."""
    shim_queue.add(Task(id="before"))
    client = shim_queue.client
    ours = {c["id"] for c in client.client_list() if c["cmd"] in ("evalsha", "fcall")}
    assert ours
    for client_id in ours:
        client.client_kill_filter(_id=client_id)
    shim_queue.add(Task(id="after"))
    shim_queue.add(Task(id="again"))
    assert {t.id for t in shim_queue.get_many(["before", "after", "again"]) if t} == {
        "before",
        "after",
        "again",
    }
    now = {c["id"] for c in client.client_list() if c["cmd"] in ("evalsha", "fcall")}
    assert now
    assert not now & ours


def test_calls_written_together_reload_a_script_the_server_lost(shim_queue: TaskQueue) -> None:
    """A batch of script calls (an add of more than 1,000 tasks) goes out in one write; when
    the server has forgotten the script, nothing ran and the batch goes again on a pipeline,
    which loads it."""
    shim_queue.add(Task(id="first"))
    shim_queue.client.script_flush()
    shim_queue.add_many([Task(id=f"t{n}") for n in range(2500)])
    assert shim_queue.stats().pending == 2501


def _line(queue: TaskQueue) -> ScriptLine:
    """A line whose script the server already has (a first call loads it)."""
    line = queue.settle_line()
    assert line is not None
    assert queue.send_settle(line, []).result().outcomes == []
    return line


def _claimed(queue: TaskQueue, *ids: str) -> list[Claim]:
    queue.add_many([Task(id=task_id) for task_id in ids])
    return queue.claim(["code"], worker_id="w1", count=1)


def test_a_settle_written_ahead_runs_before_its_reply_is_read(shim_queue: TaskQueue) -> None:
    """``send_settle`` writes the call and returns: Redis records the completion while the
    caller goes on, and ``result()`` later reads what the call did (and what it claimed)."""
    line = _line(shim_queue)
    [claim] = _claimed(shim_queue, "a", "b")
    pending = shim_queue.send_settle(
        line, [("a", claim.token, TaskResult(success=True))], ["code"], worker_id="w1", count=1
    )
    wait_until(lambda: shim_queue.get("a").status is TaskStatus.COMPLETE)  # type: ignore[union-attr]
    wait_until(pending.ready)
    settled = pending.result()
    assert settled.outcomes == [0]
    assert [c.task.id for c in settled.claims] == ["b"]
    assert pending.result() is settled  # read once, kept
    line.close()


def test_a_settle_written_on_a_killed_connection_is_made_again(shim_queue: TaskQueue) -> None:
    """The server closed the line's connection: the reply cannot be read, so the call is made
    the way every call is made when the direct path fails (on a new connection), and the line
    takes a new connection for its next call."""
    line = _line(shim_queue)
    [claim] = _claimed(shim_queue, "a", "b", "c")
    held = line._held
    assert held is not None
    held.conn.send_command("CLIENT", "ID")
    assert shim_queue.client.client_kill_filter(_id=held.conn.read_response()) == 1
    pending = shim_queue.send_settle(
        line, [("a", claim.token, TaskResult(success=True))], ["code"], worker_id="w1", count=1
    )
    settled = pending.result()
    assert settled.outcomes == [0]
    assert [c.task.id for c in settled.claims] == ["b"]
    assert shim_queue.get("a").status is TaskStatus.COMPLETE  # type: ignore[union-attr]
    again = shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1)
    assert [c.task.id for c in again.result().claims] == ["c"]
    assert line._held is not None
    assert line._held is not held
    line.close()


def test_a_settle_written_after_the_server_lost_the_script_is_made_again(
    shim_queue: TaskQueue,
) -> None:
    """A server that forgot the script ran nothing: reading the reply makes the call again,
    loading the script."""
    line = _line(shim_queue)
    [claim] = _claimed(shim_queue, "a")
    shim_queue.client.script_flush()
    pending = shim_queue.send_settle(line, [("a", claim.token, TaskResult(success=True))])
    assert pending.result().outcomes == [0]
    assert shim_queue.get("a").status is TaskStatus.COMPLETE  # type: ignore[union-attr]
    line.close()


def test_a_line_closed_with_a_reply_unread_gives_its_connection_back_disconnected(
    shim_queue: TaskQueue,
) -> None:
    """Nobody may read a reply meant for another call: a connection given back with one unread
    is disconnected first, and the pool's next user gets a clean connection."""
    line = _line(shim_queue)
    shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1)
    held = line._held
    assert held is not None
    line.close()
    assert held.conn._sock is None
    assert held.conn in _pool(shim_queue)._available_connections
    assert shim_queue.client.ping()


def test_a_line_disconnected_with_a_call_in_flight_does_not_wait_for_its_reply(
    shim_queue: TaskQueue,
) -> None:
    """A failover disconnects a pool's connections, the line's too: its reply is gone with the
    socket. ``ready()`` says so without reconnecting, and reading makes the call again at once
    instead of waiting on a new socket for a reply that cannot come."""
    line = _line(shim_queue)
    [claim] = _claimed(shim_queue, "a", "b")
    pending = shim_queue.send_settle(line, [("a", claim.token, TaskResult(success=True))])
    held = line._held
    assert held is not None
    held.conn.disconnect()  # what pool.disconnect(inuse_connections=True) does
    assert pending.ready()
    assert held.conn._sock is None  # not reconnected by asking
    results: list[Any] = []
    reader = threading.Thread(target=lambda: results.append(pending.result()))
    reader.start()
    reader.join(3)  # under the connection's 5 s socket timeout
    assert not reader.is_alive()
    assert results[0].outcomes == [0]
    assert shim_queue.get("a").status is TaskStatus.COMPLETE  # type: ignore[union-attr]
    again = shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1)
    assert again.result().outcomes == []
    line.close()


def test_two_calls_written_ahead_are_answered_in_order(shim_queue: TaskQueue) -> None:
    """A second call written before the first is read: each reply goes to its own call, and
    a line closed with one of them unread gives its connection back disconnected."""
    line = _line(shim_queue)
    shim_queue.add_many([Task(id="a"), Task(id="b"), Task(id="c")])
    first = shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1)
    second = shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=2)
    assert [c.task.id for c in first.result().claims] == ["a"]
    assert [c.task.id for c in second.result().claims] == ["b", "c"]
    shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1).result()
    left = shim_queue.send_settle(line, [], ["code"], worker_id="w1", count=1)
    held = line._held
    assert held is not None
    line.close()
    assert held.conn._sock is None
    assert left.ready()  # its reply went with the socket: reading makes the call again
    assert left.result().claims == []
