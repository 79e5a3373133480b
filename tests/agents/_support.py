"""Helpers shared by the agent tests: a small git repository, and `shim run` in this process."""

import json
import os
import subprocess
from pathlib import Path

from click.testing import CliRunner

from shim_core.cli import app

IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@t"]


def make_repo(path, files=None):
    """A git repository at ``path`` with one commit (README.md, plus ``files``)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in {"README.md": "# demo\n", **(files or {})}.items():
        (path / name).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*IDENTITY, "commit", "-qm", "i"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    return path


def git_files(repo, ref):
    out = subprocess.run(
        ["git", "ls-tree", "--name-only", ref], cwd=repo, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def shim_run(plan, env, cwd, *extra):
    """`shim run PLAN --yes --json` in this process (its local workers are threads here, so the
    whole path is measured), with ``env`` set and ``cwd`` as the current directory. Returns
    (exit code, the JSON report or None, stderr)."""
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, ["run", str(plan), "--yes", "--json", *extra], env=env)
    finally:
        os.chdir(previous)
    report = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, report, result.stderr


def run_jsonl_cli(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    record: Path | None = None,
    scrub=lambda text: text,
):
    """Run an agent CLI that prints JSON lines; returns (process, events). With ``record``, its
    output (scrubbed of machine paths) is saved there as a parser fixture."""
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(scrub(proc.stdout))
    return proc, events
