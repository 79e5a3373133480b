"""The ``shell`` executor: runs a command and reports its exit code, output tail and changed files.

Params:

* ``command`` — a string run with ``/bin/sh -c``, or a list of arguments (no shell)
* ``timeout`` — seconds before the command is killed (default ``task.timeout_ms / 1000`` when
  set, else no limit)
* ``env`` — variables added to the worker's environment (a ``null`` value removes one); the
  worker's own ``SHIM_*`` settings (its Redis URL and password, the signing keys) are left out

The command runs in the task's ``context.project_path`` (a plan's ``workdir``, made if missing),
else in ``ctx.workdir`` (a temporary directory), in a process group of its own. Its output (stdout
and stderr, merged in order) goes line by line to ``ctx.log``; a line ``::progress 0.4 some
message`` reports progress instead. On timeout or cancellation the whole group gets SIGTERM, then
SIGKILL after two seconds; processes the command leaves behind in its group are ended the same
way when it exits.

Result: success iff the exit code is 0; ``output = {"exit_code": n, "tail": [last 20 lines]}``;
``files_modified`` lists the git-status entries that are new or changed after the run when the
working directory is inside a git work tree (including changes made concurrently there by
anything else).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

import attrs

from shim_core.contracts import ExecutionContext
from shim_core.models import Task, TaskResult
from shim_plugins.executors import _git
from shim_plugins.executors._params import ParamError, number
from shim_plugins.executors._process import Outcome, Supervisor


def command_argv(command: object) -> list[str]:
    """The argument vector of a ``command`` param; raises ParamError."""
    if isinstance(command, str) and command.strip():
        return ["/bin/sh", "-c", command]
    if (
        isinstance(command, list | tuple)
        and command
        and all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in command)
    ):
        return [str(a) for a in command]
    raise ParamError(
        f"param 'command' must be a non-empty string or list of arguments, got {command!r}"
    )


def command_env(extra: object, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the ``env`` param (None values remove a variable); raises ParamError."""
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise ParamError(f"param 'env' must be a mapping, got {extra!r}")
    env = dict(base)
    env.setdefault("PYTHONUNBUFFERED", "1")  # Python children report progress as they go
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ParamError(f"param 'env' has an invalid variable name {key!r}")
        if value is None:
            env.pop(key, None)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            env[key] = str(value)
        else:
            raise ParamError(f"param 'env' value of {key!r} must be a string, got {value!r}")
    return env


def describe(outcome: Outcome, timeout: float | None) -> str | None:
    """The error of an unsuccessful outcome, None for success."""
    if outcome.cancelled:
        return f"cancelled (the command was killed, exit code {outcome.exit_code})"
    if outcome.timed_out:
        return f"timed out after {timeout:g} s (the command was killed)"
    if outcome.exit_code < 0:
        return f"killed by signal {signal.Signals(-outcome.exit_code).name}"
    if outcome.exit_code != 0:
        return f"exit code {outcome.exit_code}"
    return None


@attrs.define
class ShellExecutor:
    """Runs shell commands (see the module documentation)."""

    name: str = "shell"
    task_types: tuple[str, ...] = ()
    kill_grace: float = 2.0
    poll_interval: float = 0.1
    tail_lines: int = 20

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult:
        """Run ``params["command"]`` and report how it ended."""
        params = task.params
        try:
            argv = command_argv(params.get("command"))
            default = task.timeout_ms / 1000 if task.timeout_ms else None
            timeout = number(params, "timeout", default, minimum=0.001)
            # SHIM's own settings (the fleet's Redis URL with its password, the signing keys)
            # stay out of the command's environment; ``env`` may hand it what it needs.
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
            env = command_env(params.get("env"), inherited)
        except ParamError as exc:
            return TaskResult(success=False, error=str(exc))
        if ctx.cancelled.is_set():
            return TaskResult(success=False, error="cancelled before the command started")
        project = task.context.project_path
        cwd = Path(project) if project else ctx.workdir
        supervisor = Supervisor(ctx, self.kill_grace, self.poll_interval, self.tail_lines)
        try:
            cwd.mkdir(parents=True, exist_ok=True)  # a plan's workdir is made on first use
            before = _git.snapshot(cwd)
            outcome = supervisor.run(argv, cwd=cwd, env=env, timeout=timeout)
        except OSError as exc:
            return TaskResult(success=False, error=f"cannot start {argv[0]!r} in {cwd}: {exc}")
        error = describe(outcome, timeout)
        if error:
            ctx.log.info("command failed: %s", error)
        return TaskResult(
            success=error is None,
            output={"exit_code": outcome.exit_code, "tail": outcome.tail},
            error=error,
            files_modified=_git.changed(before, _git.snapshot(cwd)),
        )
