"""Script calls keep one pooled connection per thread (``HeldConnections``) instead of taking one
from the pool and giving it back on every call; a thread's connection goes back when the thread
ends, and one that broke is never used again."""

from __future__ import annotations

import threading
from typing import Any

from shim_core import Task, TaskQueue


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
