"""How a command starts: ``shim worker --help`` (any fleet command's help) needs neither
redis-py nor the queue, and the garbage collector pauses while a worker sets up."""

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


def test_the_collector_pauses_while_a_command_sets_up_in_the_shim_process_only() -> None:
    """In the ``shim`` process, a command that pauses the collector gets it back when it says
    so (what it set up frozen), or when it ends however it ends; run in another program (tests,
    CliRunner), the collector is left alone."""
    out = run_python(
        """
        import gc
        import click
        from click.testing import CliRunner
        from shim_core.cli import _common

        @click.command()
        @click.option("--fail", is_flag=True)
        @click.option("--resume", is_flag=True)
        def setup(fail, resume):
            _common.pause_gc()
            print("paused", not gc.isenabled())
            if fail:
                raise RuntimeError("setup failed")
            if resume:
                _common.resume_gc()
                print("resumed", gc.isenabled(), gc.get_freeze_count() > 0)

        print(CliRunner().invoke(setup, []).output.strip())
        print("embedded", gc.isenabled())
        _common.standalone = True
        setup.main([], standalone_mode=False)
        print("ended", gc.isenabled())
        try:
            setup.main(["--fail"], standalone_mode=False)
        except RuntimeError:
            print("failed", gc.isenabled())
        setup.main(["--resume"], standalone_mode=False)
        """
    )
    assert out.splitlines() == [
        "paused False",
        "embedded True",
        "paused True",
        "ended True",
        "paused True",
        "failed True",
        "paused True",
        "resumed True True",
    ]
