"""What a command loads before it runs: ``shim worker --help`` (any fleet command's help) needs
neither redis-py nor the queue."""

from __future__ import annotations

from tests.helpers import run_python


def loaded_after(argv: list[str]) -> set[str]:
    """The SHIM and redis modules a fresh interpreter holds after ``shim <argv>``."""
    code = f"""
        import sys
        from shim_core.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print(" ".join(m for m in sys.modules if m.startswith(("redis", "shim_core", "yaml"))))
    """
    return set(run_python(code).split())


def test_the_help_of_a_fleet_command_imports_no_redis() -> None:
    """The command module and the shared options import the client when a command runs."""
    loaded = loaded_after(["worker", "--help"])
    assert "shim_core.cli.fleet" in loaded
    assert not {m for m in loaded if m == "redis" or m.startswith("redis.")}
    assert not loaded & {"shim_core.connection", "shim_core.queue", "shim_core.config"}
