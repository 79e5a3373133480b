"""SHIM under a least-privilege Redis ACL user: a whole workload passes with exactly the ACL line
of docs/deployment.md, and a missing permission is named at start-up instead of failing later."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pytest_shim import RedisServer
from pytest_shim.fleet import Fleet
from shim_core import Channels, Task, TaskStatus
from shim_core.bus import MessageBus
from shim_core.cli import main
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.doctor import check_invariants
from shim_core.errors import PermissionDenied
from shim_core.models import EventType, ProgressEvent
from shim_core.permissions import (
    acl_setuser,
    check_permissions,
    eviction_risk,
    missing_permissions,
)
from tests.helpers import wait_until

PASSWORD = "acl-Pa55#word"
pytestmark = pytest.mark.shim_real_redis


class AclServer:
    """A dedicated redis-server, an admin client on it (the default user) and ACL users."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = redis.Redis(port=server.port, decode_responses=True)
        self.namespace = f"acl-{uuid.uuid4().hex[:8]}"

    def user(self, name: str = "shim", *, drop: str = "") -> str:
        """Create user ``name`` with the documented ACL line minus the rule ``drop``; returns a
        URL that logs in as it."""
        rules = acl_setuser(self.namespace, name, PASSWORD).split()
        assert rules[:2] == ["ACL", "SETUSER"]
        if drop:
            rules.remove(drop)
        self.admin.execute_command(*rules)
        return f"redis://{name}:{PASSWORD.replace('#', '%23')}@127.0.0.1:{self.server.port}/0"

    def settings(self, url: str) -> Settings:
        return Settings(redis_url=url, namespace=self.namespace, heartbeat_interval=0.5)

    def refusals(self) -> list[str]:
        """What Redis refused since the last call (ACL LOG), as 'user: object'."""
        entries = self.admin.acl_log()
        self.admin.acl_log_reset()
        return [f"{e['username']}: {e['object']} ({e['reason']})" for e in entries]


@pytest.fixture
def acl(shim_redis_server_factory: Callable[..., RedisServer]) -> Iterator[AclServer]:
    server = AclServer(shim_redis_server_factory())
    yield server
    server.admin.close()


def test_a_workload_passes_with_exactly_the_documented_acl(
    acl: AclServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tasks added, drained by two worker processes, one worker killed mid-task and reaped, its
    task completed elsewhere, every event delivered, `shim status` and the invariant check: all
    as the least-privilege user, and Redis refused nothing (its ACL LOG stays empty)."""
    settings = acl.settings(acl.user())
    connection = RedisConnectionManager(settings.redis_url)
    check_permissions(connection, settings.namespace)
    bus = MessageBus(connection, settings)
    completed: list[str] = []
    seen: list[str] = []
    lock = threading.Lock()

    def on_event(event: object, channel: str) -> None:
        with lock:
            seen.append(channel)

    bus.psubscribe(Channels.TASK_EVENTS, on_event)
    bus.subscribe(Channels.TASK_COMPLETED, lambda event, _c: completed.append(event.task_id))
    wait_until(lambda: bus.subscriber_count(Channels.TASK_COMPLETED) > 0)
    fleet = Fleet(settings, mode="process", heartbeat=0.5, log_dir=tmp_path)
    try:
        fleet.start(2)
        tasks = [Task(id=f"t{i}", executor="sim", params={"duration": 0.05}) for i in range(6)]
        fleet.queue.add_many(tasks)
        fleet.queue.add(Task(id="long", executor="sim", params={"duration": 3.0}))
        victim = wait_until(lambda: fleet.worker_running("long"), timeout=30)
        victim.kill()
        wait_until(lambda: fleet.queue.get("long").status is TaskStatus.COMPLETE, timeout=60)
        fleet.wait_idle(timeout=60)

        assert fleet.queue.stats().complete == 7
        assert fleet.registry.get_worker(victim.id).status.value == "crashed"  # the reaper ran
        wait_until(lambda: sorted(completed) == sorted(["long", *(t.id for t in tasks)]))
        assert "task:started" in seen
        assert "task:stalled" in seen  # the killed worker's task, put back by the reaper
        assert check_invariants(fleet.queue.client, fleet.queue.keys) == []
        main(["status", "--redis", settings.redis_url, "--namespace", settings.namespace])
        assert "7 complete" in capsys.readouterr().out
    finally:
        fleet.close()
        bus.close()
        connection.disconnect()
    assert acl.refusals() == []


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("+pubsub|numsub", "PUBSUB NUMSUB"),
        ("+evalsha", "EVALSHA"),
        ("+info", "INFO"),
    ],
)
def test_a_missing_command_is_named_at_start_up(acl: AclServer, drop: str, named: str) -> None:
    """A user without one command of the ACL line fails the start-up check with a message naming
    that command and the ACL line to grant; the check itself writes and publishes nothing."""
    connection = RedisConnectionManager(acl.user(drop=drop))
    try:
        with pytest.raises(PermissionDenied) as info:
            check_permissions(connection, acl.namespace)
    finally:
        connection.disconnect()

    assert len(info.value.missing) == 1
    assert info.value.missing[0].startswith(f"{named}: ")
    assert "no permissions" in info.value.missing[0]
    assert f"ACL SETUSER shim on >PASSWORD resetkeys ~shim:{{{acl.namespace}}}:*" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert acl.admin.dbsize() == 0  # nothing queued in the check ran


def test_missing_channel_pattern_and_key_pattern_are_named(acl: AclServer) -> None:
    """A user whose channel rules lack the literal task pattern, or whose key pattern is another
    namespace's, is refused with the pattern or the key in the message."""
    pattern = f"&shim:{{{acl.namespace}}}:task:*"
    connection = RedisConnectionManager(acl.user(drop=pattern))
    try:
        assert missing_permissions(connection, acl.namespace) == [
            f"PSUBSCRIBE shim:{{{acl.namespace}}}:task:*: this user has no permissions to access "
            "one of the channels used as arguments"
        ]
        missing = missing_permissions(connection, "another-namespace")
    finally:
        connection.disconnect()
    assert any(line.startswith("HSET shim:{another-namespace}:acl-check") for line in missing)


def test_missing_multi_stops_the_check_before_anything_runs(acl: AclServer) -> None:
    """Without MULTI nothing else is sent: the check says so instead of running the probes."""
    connection = RedisConnectionManager(acl.user(drop="+multi"))
    try:
        assert missing_permissions(connection, acl.namespace) == [
            "MULTI: this user has no permissions to run the 'multi' command "
            "(the other commands were not checked)"
        ]
    finally:
        connection.disconnect()
    assert acl.admin.dbsize() == 0


def test_a_refused_psubscribe_leaves_the_event_bus_running(
    acl: AclServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A PSUBSCRIBE refused by the ACL is logged and counted; the listener thread keeps
    delivering the channels it may read (it used to die with a traceback)."""
    settings = acl.settings(acl.user(drop=f"&shim:{{{acl.namespace}}}:task:*"))
    connection = RedisConnectionManager(settings.redis_url)
    bus = MessageBus(connection, settings)
    received: list[str] = []
    try:
        with caplog.at_level(logging.ERROR, logger="shim_core.bus"):
            bus.psubscribe(Channels.TASK_EVENTS, lambda event, channel: None)
            wait_until(lambda: bus.get_event_stats().refused == 1)
        bus.subscribe(Channels.TASK_COMPLETED, lambda event, _c: received.append(event.task_id))
        wait_until(lambda: bus.subscriber_count(Channels.TASK_COMPLETED) == 1)
        admin_settings = acl.settings(acl.server.url)
        publisher = MessageBus(RedisConnectionManager(admin_settings.redis_url), admin_settings)
        event = ProgressEvent(id="e1", type=EventType.COMPLETED, task_id="t1")
        publisher.publish(Channels.TASK_COMPLETED, event)
        wait_until(lambda: received == ["t1"])
        publisher.close()
    finally:
        bus.close()
        connection.disconnect()
    assert "refused a subscription" in caplog.text
    assert "NOPERM" in caplog.text or "no permissions" in caplog.text


def test_a_user_without_ping_is_refused_at_connect(acl: AclServer) -> None:
    """connect() on a user that may not even PING raises PermissionDenied naming PING."""
    manager = RedisConnectionManager(acl.user(drop="+ping"))
    with pytest.raises(PermissionDenied, match="'ping'"):
        manager.connect()
    assert not manager.is_connected()


def test_the_check_passes_on_the_embedded_store() -> None:
    """The embedded store has no ACL: nothing is missing."""
    assert missing_permissions(RedisConnectionManager("embedded://acl-test"), "default") == []


@pytest.mark.shim_real_redis
def test_a_policy_that_evicts_any_key_is_named_at_worker_start(shim_redis_server_factory):
    server = shim_redis_server_factory()
    manager = RedisConnectionManager(server.url)
    manager.connect()
    client = manager.get_client()
    try:
        assert eviction_risk(manager) is None  # the default: noeviction
        client.config_set("maxmemory", "100mb")
        client.config_set("maxmemory-policy", "volatile-lru")
        assert eviction_risk(manager) is None  # only keys with a TTL: the reaper's lock
        client.config_set("maxmemory-policy", "allkeys-lru")
        risk = eviction_risk(manager)
        assert risk is not None
        assert "maxmemory-policy allkeys-lru" in risk
        assert "noeviction" in risk
        command = [sys.executable, "-m", "shim_core.cli", "worker", "--redis", server.url]
        lines = []
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as worker:
            assert worker.stderr is not None
            for line in worker.stderr:
                lines.append(line)
                if " joined " in line:
                    break
            worker.terminate()
        assert any(line.startswith("warning: Redis at") for line in lines), lines
    finally:
        manager.disconnect()
