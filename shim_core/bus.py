"""MessageBus: pub/sub of ProgressEvents under the namespace prefix (seed component 3).

Channel names are the seed's (``task:progress``, ``worker:heartbeat``, ...); the bus adds the
namespace prefix on the wire and strips it before calling a handler. A script that publishes
several events on one channel (a batch of completions or claims) sends them as one message holding
a JSON array; handlers still get one event per call. Pub/sub is lossy by nature:
state lives in Redis keys and every consumer can rebuild its view from them; events only make views
live. One background thread per bus reads messages; after a dropped connection it reconnects and
resubscribes every channel and pattern by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import redis

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, redis_errors
from shim_core.keys import Keys
from shim_core.models import ProgressEvent
from shim_core.serde import dumps, events_from_json

log = logging.getLogger(__name__)

EventHandler = Callable[[ProgressEvent, str], None]


class Channels:
    """The seed's channel names (relative to the namespace prefix)."""

    TASK_EVENTS = "task:*"
    TASK_STARTED = "task:started"
    TASK_PROGRESS = "task:progress"
    TASK_COMPLETED = "task:completed"
    TASK_FAILED = "task:failed"
    TASK_RETRYING = "task:retrying"
    TASK_STALLED = "task:stalled"
    TASK_CANCELLED = "task:cancelled"
    TASK_RELEASED = "task:released"
    WORKER_EVENTS = "worker:*"
    WORKER_REGISTERED = "worker:registered"
    WORKER_HEARTBEAT = "worker:heartbeat"
    WORKER_CRASHED = "worker:crashed"
    SUPERVISOR_EVENTS = "supervisor:*"
    SUPERVISOR_COMMAND = "supervisor:command"


@attrs.frozen
class EventStats:
    published: int
    received: int
    handler_errors: int
    decode_errors: int
    reconnects: int
    channels: int
    patterns: int
    #: Subscriptions Redis refused (a NOPERM: the user's ACL lacks the channel or pattern).
    refused: int = 0


#: Seconds one read of the listener waits before it looks at whether to stop (close() wakes it
#: sooner: see there).
_READ_TIMEOUT = 1.0
#: How often a listener with no subscription looks again for one.
_IDLE_WAIT = 0.2
#: The messages that carry events (a pong, for one, does not).
_EVENT_TYPES = frozenset({"message", "pmessage"})
#: Longest pause between reconnect attempts: a worker's liveness subscription must come back well
#: within the registry's liveness grace (1 s) after a network blip.
_MAX_RECONNECT_DELAY = 0.25


class MessageBus:
    """Publish and subscribe to events of one namespace."""

    def __init__(self, connection: RedisConnectionManager, settings: Settings) -> None:
        self.keys = Keys(settings.namespace)
        self._url = connection.url
        # redis-py types replies as bytes | str; with decode_responses they are always str.
        self._client: Any = connection.get_client()
        self._sub_client: Any = connection.new_client()
        self._pubsub: Any = self._sub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)
        self._phandlers: dict[str, list[EventHandler]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published = self._received = self._handler_errors = 0
        self._decode_errors = self._reconnects = self._refused = 0

    # -------------------------------------------------------------- publishing
    @redis_errors
    def publish(self, channel: str, event: ProgressEvent) -> int:
        """Publish ``event`` on ``channel``; returns how many subscribers received it."""
        receivers = int(self._client.publish(self.keys.channel(channel), dumps(event)))
        self._published += 1
        return receivers

    @redis_errors
    def publish_to_pattern(self, pattern: str, event: ProgressEvent) -> int:
        """Publish ``event`` on every channel matching ``pattern`` that has a subscriber now;
        returns the number of channels published to."""
        channels = self._client.pubsub_channels(self.keys.channel(pattern))
        prefix = len(self.keys.prefix)
        for channel in channels:
            self.publish(channel[prefix:], event)
        return len(channels)

    # ------------------------------------------------------------- subscribing
    @redis_errors
    def subscribe(self, channel: str, handler: EventHandler) -> None:
        """Call ``handler(event, channel)`` for each event on ``channel``."""
        with self._lock:
            first = channel not in self._handlers
            self._handlers[channel].append(handler)
        if first:
            self._pubsub.subscribe(self.keys.channel(channel))
        self._ensure_thread()

    @redis_errors
    def psubscribe(self, pattern: str, handler: EventHandler) -> None:
        """Call ``handler(event, channel)`` for each event on a channel matching ``pattern``."""
        with self._lock:
            first = pattern not in self._phandlers
            self._phandlers[pattern].append(handler)
        if first:
            self._pubsub.psubscribe(self.keys.channel(pattern))
        self._ensure_thread()

    @redis_errors
    def unsubscribe(self, channel: str) -> None:
        with self._lock:
            self._handlers.pop(channel, None)
        self._pubsub.unsubscribe(self.keys.channel(channel))

    @redis_errors
    def punsubscribe(self, pattern: str) -> None:
        with self._lock:
            self._phandlers.pop(pattern, None)
        self._pubsub.punsubscribe(self.keys.channel(pattern))

    # -------------------------------------------------------------- statistics
    @redis_errors
    def subscriber_count(self, channel: str) -> int:
        """Subscribers of ``channel`` across all processes (pattern subscribers not included)."""
        return int(
            dict(self._client.pubsub_numsub(self.keys.channel(channel))).get(
                self.keys.channel(channel), 0
            )
        )

    def get_event_stats(self) -> EventStats:
        with self._lock:
            channels, patterns = len(self._handlers), len(self._phandlers)
        return EventStats(
            published=self._published,
            received=self._received,
            handler_errors=self._handler_errors,
            decode_errors=self._decode_errors,
            reconnects=self._reconnects,
            channels=channels,
            patterns=patterns,
            refused=self._refused,
        )

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the listener thread and close the subscriber connection. A PING written on the
        subscriber connection ends the listener's read at once (its pong is no event), rather
        than at the end of the read's timeout: written once, never reconnecting nor retrying
        (a connection that is down has no read to end)."""
        self._stop.set()
        if self._thread is not None:
            connection = self._pubsub.connection
            if self._thread.is_alive() and connection is not None and connection.is_connected:
                with contextlib.suppress(redis.RedisError, OSError):
                    connection.send_command("PING", check_health=False)
            self._thread.join(timeout=5)
        self._pubsub.close()
        self._sub_client.close()

    def __enter__(self) -> MessageBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="shim-bus", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            if not self._pubsub.subscribed:  # nothing to read (yet, or any more): close() ends
                self._stop.wait(_IDLE_WAIT)  # this wait at once, not a read's timeout
                continue
            try:
                message = self._pubsub.get_message(timeout=_READ_TIMEOUT)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._reconnects += 1
                log.warning("event bus lost its connection (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)
                continue
            except redis.ResponseError as exc:  # a refused (P)SUBSCRIBE: the others still work
                self._refused += 1
                log.error(
                    "event bus: Redis refused a subscription: %s (the user's ACL needs the "
                    "namespace's channels and each subscribed pattern, see docs/deployment.md)",
                    exc,
                )
                continue
            delay = 0.05
            if message is not None and message["type"] in _EVENT_TYPES:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        prefix = len(self.keys.prefix)
        channel = message["channel"][prefix:]
        with self._lock:
            if message["type"] == "pmessage":
                handlers = list(self._phandlers.get(message["pattern"][prefix:], ()))
            else:
                handlers = list(self._handlers.get(channel, ()))
        try:
            events = events_from_json(message["data"])
        except Exception:  # a foreign or corrupt message must not stop the listener
            self._decode_errors += 1
            log.warning("undecodable event on %s: %.200r", channel, message["data"])
            return
        for event in events:
            self._received += 1
            for handler in handlers:
                try:
                    handler(event, channel)
                except Exception:
                    self._handler_errors += 1
                    log.exception("event handler %r failed on %s", handler, channel)
