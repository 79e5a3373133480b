"""The pytest plugin (pytest_shim): report header, skip without a server, namespaces, cleanup."""

from __future__ import annotations

import pytest
import redis

from pytest_shim import RedisServer, find_redis_server

#: Inner runs skip plugins this check does not need (hypothesis' costs a second per run).
INNER = ("-p", "no:hypothesispytest", "-p", "no:randomly")


def redis_binary() -> str:
    """The redis-server binary the inner runs will find, or skip (a session on an external
    ``--shim-redis-url`` counts as real but may have no binary)."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("needs a redis-server binary on PATH")
    return binary


@pytest.mark.shim_real_redis
def test_header_names_the_real_server(pytester: pytest.Pytester) -> None:
    """The session header says a real redis-server binary is used, and which one."""
    binary = redis_binary()
    pytester.makepyfile("def test_nothing():\n    pass\n")

    result = pytester.runpytest(*INNER)

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"shim: real redis-server ({binary}) on a free loopback port"])


def test_header_names_an_explicit_url(pytester: pytest.Pytester) -> None:
    """With ``--shim-redis-url`` the header names that URL instead of starting a server."""
    pytester.makepyfile("def test_nothing():\n    pass\n")

    result = pytester.runpytest(*INNER, "--shim-redis-url=redis://127.0.0.1:1/0")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["shim: using the Redis server at redis://127.0.0.1:1/0"])


def test_without_redis_server_real_tests_skip_and_fakeredis_serves(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no redis-server on PATH a shim_real_redis test is skipped with the reason, while
    the fixtures still work on fakeredis."""
    pytester.makepyfile(
        """
        import pytest
        from shim_core import Task, TaskStatus

        @pytest.mark.shim_real_redis
        def test_needs_a_server():
            raise AssertionError("must not run without redis-server")

        def test_fallback_fixtures(shim_redis_url, shim_real_redis, shim_queue, shim_bus):
            assert shim_redis_url.startswith("embedded://")
            assert shim_real_redis is False
            shim_queue.add(Task(id="t1", type="code"))
            assert shim_queue.get("t1").status is TaskStatus.PENDING
            [claim] = shim_queue.claim(["code"], worker_id="w1")
            shim_queue.complete("t1", claim.token)
            assert shim_queue.stats().complete == 1
        """
    )
    monkeypatch.setenv("PATH", "/nonexistent")

    result = pytester.runpytest_subprocess(*INNER, "-rs", "--strict-markers", "-W", "error")

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "shim: no redis-server found: using fakeredis; tests marked shim_real_redis will be *",
            "SKIPPED*needs a real redis-server (none on PATH; only fakeredis is available)",
        ]
    )


def test_each_test_gets_its_own_namespace(pytester: pytest.Pytester) -> None:
    """Two tests of one session get different ``test-`` namespaces."""
    pytester.makepyfile(
        """
        seen = []

        def test_first(shim_settings):
            seen.append(shim_settings.namespace)

        def test_second(shim_settings):
            seen.append(shim_settings.namespace)
            assert len(seen) == 2
            assert seen[0] != seen[1]
            assert all(ns.startswith("test-") for ns in seen)
        """
    )

    result = pytester.runpytest(*INNER)

    result.assert_outcomes(passed=2)


@pytest.mark.shim_real_redis
def test_namespace_keys_are_deleted_after_the_test(pytester: pytest.Pytester) -> None:
    """The keys a test writes in its namespace are gone when the next test runs, and nothing
    else on the server is touched."""
    server = RedisServer(redis_binary()).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        client.set("outside:any:namespace", "keep me")
        pytester.makepyfile(
            f"""
            import redis
            from shim_core import Keys, Task

            URL = {server.url!r}
            written = []

            def namespace_keys(namespace):
                client = redis.Redis.from_url(URL, decode_responses=True)
                pattern = Keys(namespace).prefix.replace("{{", "\\\\{{").replace("}}", "\\\\}}")
                try:
                    return sorted(client.scan_iter(match=pattern + "*"))
                finally:
                    client.close()

            def test_writes(shim_redis_url, shim_settings, shim_queue):
                assert shim_redis_url == URL
                shim_queue.add(Task(id="t1", type="code"))
                written.append(shim_settings.namespace)
                assert Keys(shim_settings.namespace).task("t1") in namespace_keys(written[0])

            def test_namespace_is_empty_afterwards():
                assert written
                assert namespace_keys(written[0]) == []
            """
        )

        result = pytester.runpytest(*INNER, f"--shim-redis-url={server.url}")

        result.assert_outcomes(passed=2)
        assert client.keys("*") == ["outside:any:namespace"]
    finally:
        client.close()
        server.close()


def test_header_masks_the_password_of_an_explicit_url(pytester: pytest.Pytester) -> None:
    """The header never prints the password of ``--shim-redis-url`` (CI logs are public)."""
    pytester.makepyfile("def test_nothing():\n    pass\n")

    result = pytester.runpytest(*INNER, "--shim-redis-url=redis://ci:hunter2@127.0.0.1:1/0")

    result.stdout.fnmatch_lines(["shim: using the Redis server at redis://ci:***@127.0.0.1:1/0"])
    assert "hunter2" not in result.stdout.str()
