"""shim-hello's tests, written with SHIM's pytest plugin: a fleet of worker threads on the test's
own Redis namespace runs greet tasks through the hello executor."""

from __future__ import annotations

import functools
import threading
import time

import pytest
import shim_hello.plugin

import pytest_shim.fleet
from shim_core import Channels, Task, TaskStatus
from shim_core.plugins import Plugins
from shim_core.worker import Worker


def wait_for(predicate, timeout=10.0):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return value


@pytest.fixture
def hello_plugins():
    """SHIM's plugins with hello: found through its entry point once the package is installed
    (``pip install -e examples/plugin_hello``), else registered by hand."""
    plugins = Plugins()
    if "hello" not in plugins.executors:
        plugins = Plugins(extra=[shim_hello.plugin])
    return plugins


@pytest.fixture
def hello_fleet(shim_fleet_factory, hello_plugins, monkeypatch):
    """Two worker threads whose plugins include hello."""
    # Fleets build their thread workers with the plugins of the environment; hand them ours.
    monkeypatch.setattr(
        pytest_shim.fleet, "Worker", functools.partial(Worker, plugins=hello_plugins)
    )
    return shim_fleet_factory(workers=2, mode="thread", heartbeat=0.5)


def test_the_plugin_provides_the_hello_executor(hello_plugins):
    """The hello executor is loaded and claims the greet type."""
    executor = hello_plugins.executors["hello"]
    assert executor.task_types == ("greet",)
    assert hello_plugins.executor_for(Task(id="t", type="greet")) is executor
    assert not hello_plugins.errors


def test_fleet_greets_by_type_and_by_executor_name(hello_fleet, shim_queue):
    """A greet task (selected by type) and a task naming the executor both complete with their
    greeting as output."""
    shim_queue.add_many(
        [
            Task(id="by-type", type="greet", params={"name": "Ada"}),
            Task(id="by-name", type="greet", executor="hello"),
        ]
    )

    hello_fleet.wait_idle(timeout=30)

    ada, world = shim_queue.get_many(["by-type", "by-name"])
    assert (ada.status, ada.result.output) == (TaskStatus.COMPLETE, "hello, Ada")
    assert (world.status, world.result.output) == (TaskStatus.COMPLETE, "hello, world")
    assert {ada.worker_id, world.worker_id} <= {w.id for w in hello_fleet.workers}


def test_the_executor_reports_progress(hello_fleet, shim_queue, shim_bus):
    """Each greeting reports its progress on the bus: halfway, then done."""
    seen = []
    lock = threading.Lock()

    def record(event, channel):
        with lock:
            seen.append((event.progress.percentage, event.progress.message))

    shim_bus.subscribe(Channels.TASK_PROGRESS, record)
    wait_for(lambda: shim_bus.subscriber_count(Channels.TASK_PROGRESS) > 0)
    shim_queue.add(Task(id="grace", type="greet", params={"name": "Grace"}))

    wait_for(lambda: len(seen) == 2)
    assert seen == [(0.5, "greeting Grace"), (1.0, "greeted")]
    assert shim_queue.get("grace").progress == 1.0


def test_dependent_greetings_run_in_order(hello_fleet, shim_queue):
    """A greeting that depends on another starts only after it completed."""
    shim_queue.add_many(
        [
            Task(id="first", type="greet", params={"name": "Ada"}),
            Task(id="second", type="greet", params={"name": "Grace"}, dependencies=("first",)),
        ]
    )
    hello_fleet.wait_idle(timeout=30)
    first, second = shim_queue.get_many(["first", "second"])
    assert second.result.output == "hello, Grace"
    assert first.completed_at <= second.claimed_at
