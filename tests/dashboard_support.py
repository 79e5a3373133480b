"""Helpers of the dashboard tests: a real dashboard server on an ephemeral loopback port, plain
HTTP calls to it, a server-sent event reader, and runs submitted the way `shim submit` does."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.dashboard import DashboardServer, listen
from shim_core.supervisor import Supervisor
from shim_core.supervisor.runs import RunRecord
from tests.helpers import wait_until

#: Where browser tests leave their screenshots (gitignored; CI keeps them as artefacts).
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"


def strict_json(text: str) -> Any:
    """``text`` decoded as a browser's JSON.parse does: NaN and the infinities refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return strict_json(self.body)


@attrs.define
class Served:
    """A dashboard being served; ``url`` ends with ``/``."""

    url: str
    server: DashboardServer

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def call(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
        """One request; an action gets the X-Shim-Action header unless ``headers`` say."""
        sent = dict(headers or {})
        if method == "POST":
            sent.setdefault("X-Shim-Action", "1")
        request = urllib.request.Request(self.url + path.lstrip("/"), method=method, headers=sent)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as reply:
                return Reply(reply.status, dict(reply.headers.items()), reply.read().decode())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers.items()), err.read().decode())

    def stream(self, path: str, headers: dict[str, str] | None = None) -> EventReader:
        """Open the live stream ``path`` (e.g. ``api/live?run=ID``)."""
        return EventReader(self.port, "/" + path.lstrip("/"), headers or {})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@attrs.frozen
class SSE:
    id: str
    event: str
    data: Any


class EventReader:
    """Server-sent events of one connection, read one by one."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()

    def next(self) -> SSE:
        """The next event (a ``retry:`` line alone is skipped)."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            if line in ("\n", "\r\n", ""):
                if "event" in fields or line == "":
                    break
                continue
            name, _, value = line.rstrip("\n").partition(": ")
            fields[name] = value
        data = strict_json(fields["data"]) if "data" in fields else None
        return SSE(fields.get("id", ""), fields.get("event", ""), data)

    def next_of(self, kind: str, limit: int = 50) -> SSE:
        """The next event of kind ``kind`` (others skipped)."""
        for _ in range(limit):
            event = self.next()
            if event.event == kind:
                return event
        raise AssertionError(f"no {kind!r} event among the next {limit}")

    def close(self) -> None:
        self.response.close()
        self.connection.close()


@contextlib.contextmanager
def serving(settings: Settings, token: str | None = None) -> Iterator[Served]:
    """A dashboard of ``settings`` served in a thread of this process (so its code is measured
    by coverage) on a free loopback port, stopped afterwards."""
    connection = RedisConnectionManager.for_settings(settings)
    connection.connect()
    server = DashboardServer(connection, settings, listen("127.0.0.1", 0), token=token)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10)
        yield Served(server.url, server)
    finally:
        server.stop()
        thread.join(timeout=10)
        connection.disconnect()


def submit(settings: Settings, plan: dict[str, Any], tmp_path: Path) -> RunRecord:
    """Submit ``plan`` (a plan file's data) as a new run, as `shim submit` does."""
    path = tmp_path / f"plan-{len(list(tmp_path.glob('plan-*')))}.yaml"
    path.write_text(yaml.safe_dump(plan))
    connection = RedisConnectionManager.for_settings(settings)
    supervisor = Supervisor(connection, settings)
    try:
        return supervisor.submit(supervisor.decompose(str(path)))
    finally:
        supervisor.stop()
        connection.disconnect()


def sim_plan(name: str, count: int, duration: float = 0.0, **defaults: Any) -> dict[str, Any]:
    """A plan of ``count`` simulated tasks in waves of three (each depends on one of the
    previous wave); ``defaults`` are more of the plan's task defaults."""
    tasks = [
        {"id": f"t{i}", "title": f"step {i}", **({"deps": [f"t{i - 3}"]} if i >= 3 else {})}
        for i in range(count)
    ]
    params = {"duration": duration, "progress_steps": 2}
    return {
        "name": name,
        "defaults": {"executor": "sim", "params": params, **defaults},
        "tasks": tasks,
    }
