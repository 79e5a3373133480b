"""The ``shim`` command line: doctor, status, pause / resume, exit codes and one-line errors."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result

from pytest_shim import free_port
from shim_core import cli
from shim_core.cli import app, main
from shim_core.cli._common import COMMAND_MODULE_NAMES, COMMAND_MODULES, COMMANDS
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager
from shim_core.errors import ShimError
from shim_core.models import Task
from shim_core.queue import TaskQueue
from shim_core.supervisor.supervisor import RunTimeout
from tests.helpers import run_python

PASSWORD = "cli-s3cret"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner with no ``SHIM_*`` variable of the outer environment leaking in."""
    for name in ("SHIM_REDIS_URL", "SHIM_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI's connection give up at once (the default 8 retries take seconds)."""

    class GivesUpAtOnce(RedisConnectionManager):
        def __init__(self, url: str, **options: Any) -> None:
            super().__init__(url, **{"retries": 0, "connect_timeout": 1.0, **options})

    monkeypatch.setattr(cli._common, "RedisConnectionManager", GivesUpAtOnce)


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


# --------------------------------------------------------------------- doctor
def test_doctor_on_a_clean_namespace(
    runner: CliRunner, target: list[str], shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """doctor on a consistent namespace exits 0 and says there are no violations."""
    shim_queue.add(Task(id="fine", type="code"))

    result = invoke(runner, "doctor", *target)

    assert result.exit_code == 0, result.output
    assert "checked 1 task(s)" in result.stdout
    assert f"namespace {shim_settings.namespace!r}" in result.stdout
    assert result.stdout.rstrip().endswith("no violations")


def test_doctor_reports_a_corrupted_state(
    runner: CliRunner, target: list[str], shim_queue: TaskQueue
) -> None:
    """A ghost id in the delayed set (no task hash) makes doctor list it and exit 1."""
    shim_queue.client.zadd(shim_queue.keys.delayed, {"ghost": 0})

    result = invoke(runner, "doctor", *target)

    assert result.exit_code == 1
    assert "violation: ghost: is in ['delayed'] but has no task hash" in result.stdout
    assert "1 violation(s)" in result.stdout
    assert "no violations" not in result.stdout


def test_doctor_exit_code_through_main(
    target: list[str], shim_queue: TaskQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console entry point exits 1 when doctor finds a violation."""
    shim_queue.client.zadd(shim_queue.keys.delayed, {"ghost": 0})

    with pytest.raises(SystemExit) as info:
        main(["doctor", *target])

    assert info.value.code == 1
    assert "ghost" in capsys.readouterr().out


def test_doctor_success_through_main_returns_normally(
    target: list[str], shim_queue: TaskQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console entry point returns (exit status 0) when doctor finds nothing."""
    main(["doctor", *target])

    assert "no violations" in capsys.readouterr().out


def test_doctor_json(runner: CliRunner, target: list[str], shim_queue: TaskQueue) -> None:
    """``doctor --json`` prints one JSON object with ok, task count and violations."""
    shim_queue.add_many([Task(id="a"), Task(id="b")])
    clean = invoke(runner, "doctor", "--json", *target)
    shim_queue.client.zadd(shim_queue.keys.delayed, {"ghost": 0})
    broken = invoke(runner, "doctor", "--json", *target)

    assert clean.exit_code == 0
    assert json.loads(clean.stdout) == {"ok": True, "tasks": 2, "violations": []}
    assert broken.exit_code == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    assert report["tasks"] == 2
    assert report["violations"] == ["ghost: is in ['delayed'] but has no task hash"]


# --------------------------------------------------------------------- status
def test_status_shows_counts_by_type(
    runner: CliRunner, target: list[str], shim_queue: TaskQueue
) -> None:
    """status lists each type with its count per status."""
    empty = invoke(runner, "status", *target)
    shim_queue.add_many(
        [Task(id="c1", type="code"), Task(id="c2", type="code"), Task(id="r1", type="research")]
    )
    [claim] = shim_queue.claim(["research"], worker_id="w1")
    shim_queue.complete(claim.task.id, claim.token)

    result = invoke(runner, "status", *target)

    assert "no tasks" in empty.stdout
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "  code: 2 pending" in lines
    assert "  research: 1 complete" in lines


def test_status_json(runner: CliRunner, target: list[str], shim_queue: TaskQueue) -> None:
    """``status --json`` prints the paused flag and the counts by type and status."""
    shim_queue.add_many([Task(id="t1", type="test"), Task(id="t2", type="test")])

    result = invoke(runner, "status", "--json", *target)

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "paused": False,
        "by_type": {"test": {"pending": 2}},
        "cooldowns": {},
    }


# ------------------------------------------------------------ pause / resume
def test_pause_and_resume(runner: CliRunner, target: list[str], shim_queue: TaskQueue) -> None:
    """pause makes queue.is_paused() true (status says so); resume clears it."""
    assert not shim_queue.is_paused()

    paused = invoke(runner, "pause", *target)

    assert paused.exit_code == 0
    assert f"paused namespace {shim_queue.settings.namespace!r}" in paused.stdout
    assert shim_queue.is_paused()
    assert "(paused)" in invoke(runner, "status", *target).stdout

    resumed = invoke(runner, "resume", *target)

    assert resumed.exit_code == 0
    assert f"resumed namespace {shim_queue.settings.namespace!r}" in resumed.stdout
    assert not shim_queue.is_paused()


def test_options_from_environment(
    runner: CliRunner, shim_settings: Settings, shim_queue: TaskQueue
) -> None:
    """``SHIM_REDIS_URL`` / ``SHIM_NAMESPACE`` stand in for the options."""
    result = runner.invoke(
        app,
        ["pause"],
        catch_exceptions=False,
        env={
            "SHIM_REDIS_URL": shim_settings.redis_url,
            "SHIM_NAMESPACE": shim_settings.namespace,
        },
    )

    assert result.exit_code == 0
    assert shim_queue.is_paused()


# --------------------------------------------------------------------- errors
@pytest.mark.usefixtures("no_retries")
def test_unreachable_redis_exits_3_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unreachable Redis exits 3 with one error line whose URL has the password masked."""
    url = f"redis://admin:{PASSWORD}@127.0.0.1:{free_port()}/0"

    with pytest.raises(SystemExit) as info:
        main(["status", "--redis", url, "--namespace", "ops"])

    assert info.value.code == 3
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert "Traceback" not in err
    assert err.startswith("error: cannot reach Redis at redis://admin:***@127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_bad_namespace_exits_2_with_one_line(
    shim_redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid namespace exits 2 with a single error line and no traceback."""
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--redis", shim_redis_url, "--namespace", "bad name!"])

    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: invalid namespace 'bad name!'")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unsupported_url_scheme_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL with an unsupported scheme exits 2 with one line, password masked."""
    with pytest.raises(SystemExit) as info:
        main(["status", "--redis", f"http://u:{PASSWORD}@h:80", "--namespace", "ops"])

    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unsupported Redis URL")
    assert PASSWORD not in err
    assert len(err.strip().splitlines()) == 1


def test_unparseable_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that cannot be parsed exits 2 with one line instead of a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["status", "--redis", f"redis://:{PASSWORD}@[::1:6379", "--namespace", "ops"])

    assert info.value.code == 2
    assert PASSWORD not in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option is a usage error: exit 2 with click's message."""
    with pytest.raises(SystemExit) as info:
        main(["status", "--no-such-option"])

    assert info.value.code == 2
    assert "No such option" in capsys.readouterr().err


def test_version_and_help(runner: CliRunner) -> None:
    """--version prints the version and --help lists the commands."""
    version = invoke(runner, "--version")
    helptext = invoke(runner, "--help")

    assert version.exit_code == 0
    assert "shim, version 0.1.0" in version.stdout
    assert helptext.exit_code == 0
    for command in ("doctor", "status", "pause", "resume"):
        assert command in helptext.stdout


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (lambda: redis.ConnectionError("down"), 3, "error: Redis is unreachable: down"),
        (lambda: redis.TimeoutError("slow"), 3, "error: Redis is unreachable: slow"),
        (lambda: redis.ResponseError("WRONGTYPE"), 2, "error: Redis refused a command: WRONGTYPE"),
        (lambda: RunTimeout("r1", 2.0), 1, "error: run r1 did not finish within 2 s"),
        (lambda: ShimError("bad input"), 2, "error: bad input"),
    ],
)
def test_errors_become_one_line_and_an_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Callable[[], Exception],
    code: int,
    line: str,
) -> None:
    """Redis errors, a run timeout and SHIM errors each exit with their code and one line."""

    def fail(**kwargs: object) -> None:
        raise error()

    monkeypatch.setattr(cli.app, "main", fail)
    with pytest.raises(SystemExit) as info:
        main([])

    assert info.value.code == code
    assert capsys.readouterr().err.strip() == line


def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception that is neither a SHIM nor a Redis error is a bug: it propagates."""

    def fail(**kwargs: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(cli.app, "main", fail)
    with pytest.raises(KeyError, match="bug"):
        main([])


def test_every_command_is_mapped_to_its_module() -> None:
    """The lazy group imports the right module for each command (a stale map would still work,
    importing every module, but slowly)."""
    for module in COMMAND_MODULE_NAMES:
        importlib.import_module(f"shim_core.cli.{module}")
    modules = {module: f"shim_core.cli.{module}" for module in COMMAND_MODULE_NAMES}
    assert set(COMMAND_MODULES) == set(app.commands)
    for name, command in app.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == modules[COMMAND_MODULES[name]], name


def _fresh_cli(argv: list[str], then: str = "") -> tuple[str, set[str]]:
    """What ``shim ARGV`` printed in a fresh interpreter (running ``then`` after it), and every
    module loaded by the end."""
    script = (
        "import sys\n"
        "from shim_core.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"{then}"
        "print('\\nloaded:', ' '.join(sorted(sys.modules)))\n"
    )
    printed, _, loaded = run_python(script, timeout=120).rpartition("\nloaded: ")
    return printed, set(loaded.split())


def test_the_command_list_imports_no_command_module_and_matches_the_commands() -> None:
    """`shim --help` lists every command from the table, without importing a command module
    (nor redis-py); `shim CMD --help` shows the same summary a command's help list does."""
    printed, loaded = _fresh_cli(["--help"])
    assert {m for m in loaded if m.startswith(("redis", "shim_core.cli."))} == {
        "shim_core.cli._common"
    }
    lines = printed.strip().splitlines()
    assert {line.split()[0] for line in lines[lines.index("Commands:") + 1 :]} == set(COMMANDS)
    ctx = click.Context(app)
    for name, (_, summary) in COMMANDS.items():
        command = app.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=200) == summary, name
        assert command.help, name  # the full text stays the command's own docstring


def test_worker_command_loads_neither_the_supervisor_nor_yaml() -> None:
    """`shim worker` (its help, then a worker's plugins) imports no plan reader, supervisor,
    report rendering or embedded Redis: a worker process starts faster without them."""
    then = "from shim_core.plugins import Plugins\nfrom shim_core.worker import Worker\nPlugins()\n"
    _, loaded = _fresh_cli(["worker", "--help"], then)
    assert "shim_core.cli.fleet" in loaded
    unwanted = {
        "yaml",
        "fakeredis",
        "shim_core.cli.runs",
        "shim_core.console",
        "shim_core.supervisor.supervisor",
        "shim_core.supervisor.graph",
        "shim_core.supervisor.decomposer",
    }
    assert not unwanted & loaded
