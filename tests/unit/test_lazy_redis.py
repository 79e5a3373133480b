"""shim_core._lazy_redis: ``import redis`` after SHIM leaves ``redis/asyncio/__init__.py`` unrun
and ``importlib.metadata`` unimported until something reads a name from them, and every way of
reaching them still works.

Each case runs in a fresh interpreter: this one imported redis long ago.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.helpers import run_python

#: Prints the state of ``redis.asyncio`` in the child: ``deferred`` or ``loaded``.
_STATE = """
def state():
    module = sys.modules.get("redis.asyncio")
    if module is None:
        return "absent"
    return "deferred" if type(module).__name__ == "_DeferredPackage" else "loaded"
"""


def run(code: str) -> str:
    """Run ``code`` (with ``sys``, ``state()``) in a fresh interpreter; its stdout."""
    return run_python("import sys\n" + _STATE + textwrap.dedent(code))


def test_a_worker_s_imports_leave_redis_asyncio_unrun_and_metadata_unimported() -> None:
    """What a worker imports (the connection manager, the queue, the worker) does not run
    ``redis.asyncio`` nor import ``importlib.metadata``; the sync client is whole, and the finder
    has taken itself off."""
    out = run(
        """
        import shim_core.connection, shim_core.queue, shim_core.worker
        import redis
        print(state(), redis.Redis.__module__, redis.__spec__.loader.__class__.__name__)
        print(any(type(f).__name__ == "_Finder" for f in sys.meta_path))
        print("redis.asyncio.client" in sys.modules, "importlib.metadata" in sys.modules)
        """
    )
    assert out.splitlines() == ["deferred redis.client SourceFileLoader", "False", "False False"]


def test_importlib_metadata_is_the_real_module_for_everyone_else() -> None:
    """redis-py's own lookup of its version works (and imports importlib.metadata then); any
    other ``from importlib import metadata`` gets the real module, before and after."""
    out = run(
        """
        import importlib
        import shim_core, redis, redis.utils
        print(hasattr(importlib, "metadata"))
        from importlib import metadata
        real = sys.modules["importlib.metadata"]
        print(metadata is real is importlib.metadata)
        print(redis.utils.get_lib_version() == metadata.version("redis") == redis.__version__)
        """
    )
    assert out.splitlines() == ["False", "True", "True"]
    out = run(
        """
        import shim_core, redis.utils
        print(redis.utils.get_lib_version() == redis.__version__)
        print(type(sys.modules["importlib.metadata"]).__name__)
        """
    )
    assert out.splitlines() == ["True", "module"]


@pytest.mark.parametrize(
    "code",
    [
        # a name read through the attribute redis-py binds
        "import shim_core, redis\nR = redis.asyncio.Redis\nimport redis.asyncio.client as c",
        # a submodule imported first: its own `from redis.asyncio import _himport_exec` must
        # not run the package's __init__ half-way through it
        "import shim_core, redis\nfrom redis.asyncio.client import Redis as R\n"
        "import redis.asyncio.client as c\nassert redis.asyncio.Redis is R",
        # from-imports, before and after `import redis`
        "import shim_core\nfrom redis.asyncio import Redis as R, ConnectionPool\n"
        "import redis.asyncio.client as c",
        "import shim_core\nfrom redis import asyncio as aioredis\nR = aioredis.Redis\n"
        "import redis.asyncio.client as c",
        # `import redis.asyncio` first (it imports redis itself)
        "import shim_core\nimport redis.asyncio\nR = redis.asyncio.StrictRedis\n"
        "import redis.asyncio.client as c\nassert redis.Redis.__module__ == 'redis.client'",
        # a star import reads __all__
        "import shim_core, redis\nns = {}\nexec('from redis.asyncio import *', ns)\n"
        "R = ns['Redis']\nimport redis.asyncio.client as c",
        # redis imported before SHIM: nothing is changed
        "import redis, shim_core.connection\nassert state() == 'loaded'\nR = redis.asyncio.Redis\n"
        "import redis.asyncio.client as c",
    ],
    ids=[
        "attribute",
        "submodule-first",
        "from-import",
        "from-redis",
        "import-first",
        "star",
        "redis-before-shim",
    ],
)
def test_redis_asyncio_works_however_it_is_reached(code: str) -> None:
    """``R`` is the asyncio client class whichever way it was reached; the package is then an
    ordinary, fully run module, the one in ``sys.modules``."""
    out = run(
        code
        + """
assert R is c.Redis or R is c.StrictRedis
import redis
import redis.asyncio as package
assert package is sys.modules["redis.asyncio"] is redis.asyncio
assert "Redis" in dir(package) and package.__all__
print(state())
"""
    )
    assert out == "loaded"


def test_a_missing_name_is_an_attribute_error_after_loading() -> None:
    """Reading a name the package does not have loads it, then raises AttributeError as usual;
    a submodule name imports only that submodule."""
    out = run(
        """
        import shim_core, redis
        assert hasattr(redis.asyncio, "sentinel")
        print(state())
        try:
            redis.asyncio.no_such_name
        except AttributeError as exc:
            print(exc)
        print(state())
        """
    )
    assert out.splitlines() == [
        "deferred",
        "module 'redis.asyncio' has no attribute 'no_such_name'",
        "loaded",
    ]


def test_threads_reading_it_at_once_all_get_the_class() -> None:
    """Eight threads reading ``redis.asyncio.Redis`` at the same moment all get it: the others
    wait while the first one runs the package."""
    out = run(
        """
        import threading
        import shim_core, redis
        barrier, found, errors = threading.Barrier(8), [], []

        def read():
            barrier.wait()
            try:
                found.append(redis.asyncio.Redis)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(len(found), len(set(found)), errors)
        """
    )
    assert out == "8 1 []"


def test_mock_patch_and_fakeredis_see_the_real_package() -> None:
    """``mock.patch("redis.asyncio.Redis")`` patches the real package; fakeredis (the embedded
    store), which uses redis.asyncio, works."""
    out = run(
        """
        from unittest import mock
        import shim_core, redis
        with mock.patch("redis.asyncio.Redis") as fake:
            assert redis.asyncio.Redis is fake
        assert redis.asyncio.Redis is redis.asyncio.client.Redis
        import fakeredis
        client = fakeredis.FakeRedis(decode_responses=True)
        client.set("k", "v")
        print(client.get("k"), state())
        """
    )
    assert out == "v loaded"
