"""SHIM_WAIT_REPLICAS: a completion waits (in the same write) for replicas to hold it, and says
so when they do not in time; the Sentinel URL's own credentials and its +switch-master watch."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, SentinelWatch, parse_redis_url
from shim_core.errors import ConfigError
from shim_core.models import Task
from shim_core.queue import TaskQueue
from shim_core.redact import mask_url


@pytest.mark.shim_real_redis
def test_a_completion_no_replica_holds_in_time_is_counted_and_logged(
    shim_connection: RedisConnectionManager, shim_settings: Settings, caplog: Any
) -> None:
    queue = TaskQueue(
        shim_connection, attrs.evolve(shim_settings, wait_replicas=1, wait_timeout_ms=50)
    )
    queue.add_many([Task(id="a"), Task(id="b")])
    first, second = queue.claim(["code"], worker_id="w1", count=2)
    with caplog.at_level(logging.WARNING, logger="shim_core.queue"):
        assert queue.complete("a", first.token) == 0
        settled = queue.settle([("b", second.token, None)])
    assert settled.outcomes == [0]
    assert queue.unreplicated == 2  # this server has no replica
    assert "held by 0 of 1 replica(s) after 50 ms" in caplog.text
    assert queue.stats().complete == 2  # recorded on the master all the same


def test_sentinel_urls_take_the_sentinels_own_credentials_and_mask_them() -> None:
    url = "redis+sentinel://h1:26379,h2:26380/shim/0?sentinel_password=s3cret&password=m4ster"
    parsed = parse_redis_url(url)
    assert parsed.options["sentinel_password"] == "s3cret"
    assert "s3cret" not in mask_url(url)
    assert "m4ster" not in mask_url(url)
    with pytest.raises(ConfigError, match="sentinel_password"):
        parse_redis_url("redis://h:6379/0?sentinel_password=x")


def test_the_watch_reacts_to_its_own_service_only() -> None:
    seen: list[str] = []
    watch = SentinelWatch((), "shim", {}, seen.append)  # no sentinel: no listener thread
    watch._switched(b"other 127.0.0.1 1 127.0.0.1 2")
    watch._switched("shim 127.0.0.1 6379")  # malformed
    watch._switched(b"shim 127.0.0.1 6379 127.0.0.1 6380")
    watch.stop()
    assert seen == ["127.0.0.1:6380"]
