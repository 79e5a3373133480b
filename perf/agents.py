"""What SHIM adds to each agent task: CLI start-up through the executor, and git worktree cost.

1. **Spawn to first model request**, for ``claude`` and ``codex`` (a CLI whose binary is not
   on PATH is skipped). Each run gets a fresh scripted model server on loopback
   (``pytest_shim.models``, script ``[Text("done")]``) and a fresh temporary HOME / CODEX_HOME.

   * raw: from ``subprocess.Popen`` of the CLI to the server receiving the first conversation
     request. The argv is the adapter's own ``argv()`` for an ``AgentInvocation`` with the
     prompt SHIM would build for the task, and the environment is the one SHIM would give it.
   * SHIM: from calling ``AgentExecutor().execute(task, ctx)`` (a ``RecordingContext``, no
     worktree) to the first request. "before spawn" is the part until the executor logs
     ``running ...``, just before it starts the CLI.
   * overhead: SHIM minus raw, per pair of runs (the two kinds alternate, so drift in the
     machine's load hits both alike).

2. **Worktree cost on a repository of ``--files`` small files** (default 1,000, in 50 folders,
   one commit), ``Worktrees`` with a temporary ``root``: a plain ``git worktree add`` (the
   baseline: what git alone costs for this checkout), ``prepare`` of a fresh task,
   ``prepare`` of a task whose 2 dependency branches (one small commit each) are merged in,
   ``commit`` after changing 10 files, ``remove``, and ``merge_run`` of a run of 8 task
   branches (each touching its own file). Each sample uses a run id of its own.

3. **One whole one-turn claude task** in that repository: ``AgentExecutor.execute`` with
   ``workspace: worktree`` (prepare, CLI run, commit, remove) against the raw CLI run from
   ``Popen`` to exit in the repository's own checkout, with two parts of the difference:
   ``execute`` to ``Popen`` (the worktree), and the CLI's last output line to the return of
   ``execute`` (process end, commit, remove) next to the raw CLI's last line to its exit.

Each figure is the median over N runs (default 7, ``--quick`` 3) with min and max, after one
untimed warm-up run of each CLI. Run from the repository root::

    .venv/bin/python perf/agents.py                 # about 3.5 minutes here (2 cores)
    .venv/bin/python perf/agents.py --quick --json out.json

No Redis is involved: the executor runs in-process on a ``RecordingContext``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import attrs

from pytest_shim.models import anthropic, openai
from shim_core.contracts import AgentAdapter, AgentInvocation
from shim_core.models import Task, TaskContext
from shim_core.testing import RecordingContext
from shim_core.worktrees import Worktrees, git, merge_run
from shim_plugins.agents import ClaudeAdapter, CodexAdapter
from shim_plugins.executors._agent_prompt import build_prompt, load_template
from shim_plugins.executors.agent import AgentExecutor
from shim_plugins.executors.shell import command_env

PARTS = ("spawn", "worktree", "execute")
#: Longest a single CLI run may take before the benchmark gives up on it.
CLI_TIMEOUT = 120.0
_IDENTITY = ("-c", "user.name=perf", "-c", "user.email=perf@localhost")


# ------------------------------------------------------------------------------ statistics
@attrs.frozen
class Row:
    """One measured quantity: its samples in seconds."""

    what: str
    samples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "median_ms": statistics.median(self.samples) * 1000,
            "min_ms": min(self.samples) * 1000,
            "max_ms": max(self.samples) * 1000,
            "n": len(self.samples),
            "samples_ms": [s * 1000 for s in self.samples],
        }


def table(rows: Sequence[Row]) -> str:
    lines = ["| what | median | min | max | N |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        d = row.to_dict()
        lines.append(
            f"| {row.what} | {d['median_ms']:,.0f} ms | {d['min_ms']:,.0f} ms "
            f"| {d['max_ms']:,.0f} ms | {d['n']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- agents
@attrs.frozen
class Agent:
    """How to run one CLI offline: its adapter, scripted server and environment."""

    name: str
    adapter: AgentAdapter
    server: Callable[[], AbstractContextManager[Any]]
    env: Callable[[str, str], dict[str, str]]  # (server url, home) -> variables
    extra_args: Callable[[str], list[str]]  # server url -> arguments


AGENTS = {
    "claude": Agent(
        "claude",
        ClaudeAdapter(),
        lambda: anthropic.ScriptedAnthropic([anthropic.Text("done")]),
        anthropic.claude_env,
        lambda url: [],
    ),
    "codex": Agent(
        "codex",
        CodexAdapter(),
        lambda: openai.ScriptedOpenAI([openai.Text("done")]),
        lambda url, home: openai.codex_env(home),
        openai.codex_args,
    ),
}


@attrs.frozen
class Timing:
    """One CLI run, seconds from its start (Popen, or the call to ``execute``)."""

    first_request: float
    total: float
    #: When the CLI printed its last line.
    last_output: float
    #: When the executor was about to start the CLI (SHIM runs only).
    before_spawn: float | None = None


class _SpawnClock(logging.Handler):
    """Notes when the agent executor logs ``running ...`` (just before it starts the CLI) and
    when it logs the CLI's last output line (the executor logs every line)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.at: float | None = None
        self.last: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and str(record.msg).startswith("running "):
            self.at = time.monotonic()
        elif self.at is not None:
            self.last = time.monotonic()


@contextmanager
def spawn_clock() -> Iterator[_SpawnClock]:
    handler = _SpawnClock()
    logger = logging.getLogger("shim.task")  # every task logger propagates here
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def agent_task(agent: Agent, task_id: str, url: str, home: str, **fields: Any) -> Task:
    params = {
        "agent": agent.name,
        "env": agent.env(url, home),
        "extra_args": agent.extra_args(url),
        "timeout": CLI_TIMEOUT,
    }
    return Task(
        id=task_id,
        title="Say done",
        description="Reply with the single word done. Do not change any file.",
        executor="agent",
        params=params,
        **fields,
    )


def run_raw(agent: Agent, cwd: Path, scratch: Path) -> Timing:
    """The CLI started directly: the adapter's argv and the environment SHIM would give it."""
    binary = shutil.which(agent.adapter.command) or agent.adapter.command
    home = scratch / "home"
    home.mkdir()
    with agent.server() as server:
        task = agent_task(agent, "raw", server.url, str(home))
        prompt = build_prompt(task, {}, load_template(None))
        prompt_file = scratch / "prompt.md"
        prompt_file.write_text(prompt, encoding="utf-8")
        invocation = AgentInvocation(
            prompt=prompt,
            prompt_file=prompt_file,
            workdir=cwd,
            extra_args=tuple(task.params["extra_args"]),
        )
        argv = agent.adapter.argv(binary, invocation)
        env = command_env(task.params["env"], {**agent.adapter.env(invocation), **os.environ})
        lines: list[str] = []
        start = time.monotonic()
        last = start
        with subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            timer = threading.Timer(CLI_TIMEOUT, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None  # stdout=PIPE
                for line in proc.stdout:  # read line by line, as the executor does
                    last = time.monotonic()
                    lines.append(line)
                proc.wait()
            finally:
                timer.cancel()
        total = time.monotonic() - start
        first = server.first_request_at
    if proc.returncode != 0 or first is None:
        out = "".join(lines[-10:])[-800:]
        raise RuntimeError(f"raw {agent.name} failed ({proc.returncode}): {out}")
    return Timing(first - start, total, last - start)


def run_shim(
    agent: Agent,
    workdir: Path,
    scratch: Path,
    *,
    worktree: tuple[str, str, Path] | None = None,
    run_id: str = "",
) -> Timing:
    """The CLI run by ``AgentExecutor.execute``; ``worktree`` = (repo, base, root) puts the task
    in a worktree of its own."""
    home = scratch / "home"
    home.mkdir()
    fields: dict[str, Any] = {}
    root = None
    if worktree is not None:
        repo, base, root = worktree
        fields = {
            "run_id": run_id,
            "context": TaskContext(repo=repo, base=base, workspace="worktree"),
        }
    with agent.server() as server, spawn_clock() as clock:
        task_id = f"{run_id}:agent" if run_id else "shim"
        task = agent_task(agent, task_id, server.url, str(home), **fields)
        executor = AgentExecutor(worktree_root=root)
        with RecordingContext(
            task=task, workdir=workdir, agent_adapters={agent.name: agent.adapter}
        ) as ctx:
            start = time.monotonic()
            result = executor.execute(task, ctx)
            total = time.monotonic() - start
        first = server.first_request_at
    if not result.success or first is None:
        tail = "\n".join(ctx.logs[-10:])
        raise RuntimeError(f"{agent.name} through SHIM failed: {result.error}\n{tail}")
    if clock.at is None or clock.last is None:
        raise RuntimeError(f"{agent.name} through SHIM: no 'running' or output line was logged")
    return Timing(first - start, total, clock.last - start, clock.at - start)


def scratch_dir() -> AbstractContextManager[str]:
    return tempfile.TemporaryDirectory(prefix="shim-perf-agents-")


def measure_spawn(agent: Agent, n: int, warmup: int) -> list[Row]:
    raw: list[float] = []
    shim: list[float] = []
    before: list[float] = []
    for i in range(warmup + n):
        pair: list[Timing] = []
        # alternate which goes first, so neither always runs right after the other
        for kind in ("raw", "shim") if i % 2 == 0 else ("shim", "raw"):
            with scratch_dir() as tmp:
                scratch, work = Path(tmp), Path(tmp) / "work"
                work.mkdir()
                if kind == "raw":
                    pair.insert(0, run_raw(agent, work, scratch))
                else:
                    pair.append(run_shim(agent, work, scratch))
        if i < warmup:
            continue
        raw.append(pair[0].first_request)
        shim.append(pair[1].first_request)
        if pair[1].before_spawn is not None:
            before.append(pair[1].before_spawn)
    rows = [
        Row(f"{agent.name}: Popen → first request (raw)", tuple(raw)),
        Row(f"{agent.name}: execute() → first request (SHIM)", tuple(shim)),
        Row(
            f"{agent.name}: SHIM overhead to first request (paired)",
            tuple(s - r for s, r in zip(shim, raw, strict=True)),
        ),
    ]
    if before:
        rows.append(Row(f"{agent.name}: of which execute() → Popen", tuple(before)))
    return rows


# ------------------------------------------------------------------------------- worktrees
def make_repo(path: Path, files: int, folders: int) -> str:
    """A repository of ``files`` small files in ``folders`` folders, one commit; its HEAD."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        folder = path / f"pkg{i % folders:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i:04d}.py").write_text(f'"""Module {i}."""\n\nVALUE = {i}\n')
    git(path, "add", "-A")
    git(path, *_IDENTITY, "commit", "-q", "-m", "init")
    return git(path, "rev-parse", "HEAD").strip()


def _task_branch(trees: Worktrees, run_id: str, plan_id: str, base: str, name: str) -> None:
    """A task branch with one small commit (its own file)."""
    ws = trees.prepare(run_id, plan_id, base, [])
    (ws.path / name).write_text(f"{plan_id}\n")
    trees.commit(ws, f"task {plan_id}")
    trees.remove(ws)


@attrs.frozen
class Settings:
    n: int
    warmup: int
    files: int
    folders: int


@attrs.frozen
class Repo:
    """The test repository, its base commit and the worktree root."""

    path: Path
    base: str
    root: Path
    label: str


def measure_worktrees(repo: Repo, n: int) -> list[Row]:
    trees = Worktrees(str(repo.path), repo.root)
    base = repo.base
    tracked = sorted(git(repo.path, "ls-files").split())
    edited = tracked[:: max(1, len(tracked) // 10)][:10]
    samples: dict[str, list[float]] = {
        k: [] for k in ("git", "prepare", "prepare2", "commit", "remove", "merge")
    }
    for i in range(n):
        run_id = f"w{i}"
        bare = repo.root / "plain-git" / run_id  # the baseline: git alone, no SHIM
        start = time.perf_counter()
        git(repo.path, "worktree", "add", "--quiet", "-b", f"perf/{run_id}", str(bare), base)
        samples["git"].append(time.perf_counter() - start)
        git(repo.path, "worktree", "remove", "--force", str(bare))
        start = time.perf_counter()
        ws = trees.prepare(run_id, "plain", base, [])
        samples["prepare"].append(time.perf_counter() - start)
        for name in edited:
            with open(ws.path / name, "a") as handle:
                handle.write(f"# changed by run {run_id}\n")
        start = time.perf_counter()
        _, changed = trees.commit(ws, "ten files")
        samples["commit"].append(time.perf_counter() - start)
        if len(changed) != len(edited):
            raise RuntimeError(f"commit saw {len(changed)} changed files, expected {len(edited)}")
        start = time.perf_counter()
        trees.remove(ws)
        samples["remove"].append(time.perf_counter() - start)

        for dep in ("d1", "d2"):
            _task_branch(trees, run_id, dep, base, f"{dep}.txt")
        start = time.perf_counter()
        ws = trees.prepare(run_id, "after", base, ["d1", "d2"])
        samples["prepare2"].append(time.perf_counter() - start)
        if not (ws.path / "d1.txt").exists() or not (ws.path / "d2.txt").exists():
            raise RuntimeError("the dependency branches were not merged in")
        trees.remove(ws)

        merge_id = f"m{i}"
        order = [f"t{k}" for k in range(8)]
        for plan_id in order:
            _task_branch(trees, merge_id, plan_id, base, f"{plan_id}.txt")
        start = time.perf_counter()
        report = merge_run(str(repo.path), base, merge_id, order, root=repo.root)
        samples["merge"].append(time.perf_counter() - start)
        if report.merged != tuple(order):
            raise RuntimeError(f"merge_run merged {report.merged}, conflicts {report.conflicts}")
    where = f"({repo.label})"
    return [
        Row(f"plain `git worktree add`, for comparison {where}", tuple(samples["git"])),
        Row(f"worktree prepare {where}", tuple(samples["prepare"])),
        Row(f"worktree prepare + merge 2 dependency branches {where}", tuple(samples["prepare2"])),
        Row(f"worktree commit of {len(edited)} changed files {where}", tuple(samples["commit"])),
        Row(f"worktree remove {where}", tuple(samples["remove"])),
        Row(f"merge_run of 8 task branches {where}", tuple(samples["merge"])),
    ]


def measure_execute(agent: Agent, repo: Repo, settings: Settings) -> list[Row]:
    raw: list[Timing] = []
    shim: list[Timing] = []
    where = (str(repo.path), repo.base, repo.root)
    for i in range(settings.warmup + settings.n):
        pair: list[Timing] = []
        for kind in ("raw", "shim") if i % 2 == 0 else ("shim", "raw"):
            with scratch_dir() as tmp:
                scratch = Path(tmp)
                if kind == "raw":
                    pair.insert(0, run_raw(agent, repo.path, scratch))
                else:
                    pair.append(run_shim(agent, scratch, scratch, worktree=where, run_id=f"x{i}"))
        if i >= settings.warmup:
            raw.append(pair[0])
            shim.append(pair[1])
    name = agent.name
    return [
        Row(f"{name}: one-turn run, Popen → exit (raw, in the checkout)", _totals(raw)),
        Row(f"{name}: one-turn task, execute() in a worktree (SHIM)", _totals(shim)),
        Row(
            f"{name}: SHIM overhead per one-turn task (paired)",
            tuple(s - r for s, r in zip(_totals(shim), _totals(raw), strict=True)),
        ),
        Row(
            f"{name}: of which execute() → Popen (worktree prepare)",
            tuple(t.before_spawn or 0.0 for t in shim),
        ),
        Row(f"{name}: last output line → exit (raw)", tuple(t.total - t.last_output for t in raw)),
        Row(
            f"{name}: last output line → execute() returns (SHIM: exit, commit, remove)",
            tuple(t.total - t.last_output for t in shim),
        ),
    ]


def _totals(timings: Sequence[Timing]) -> tuple[float, ...]:
    return tuple(t.total for t in timings)


# ------------------------------------------------------------------------------------ main
def machine() -> dict[str, Any]:
    def version(binary: str) -> str | None:
        if shutil.which(binary) is None:
            return None
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip() or None

    return {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "git": git(".", "--version").strip(),
        "claude": version("claude"),
        "codex": version("codex"),
    }


def run(settings: Settings, parts: Sequence[str], agents: Sequence[str]) -> dict[str, Any]:
    """Measure ``parts``; returns the report (what ``--json`` writes)."""
    info = machine()
    info["loadavg_before"] = list(os.getloadavg())
    started = time.time()
    rows: list[Row] = []
    skipped: list[str] = []
    present = []
    for name in agents:
        if shutil.which(AGENTS[name].adapter.command) is None:
            skipped.append(f"{name}: binary not on PATH")
        else:
            present.append(AGENTS[name])
    if "spawn" in parts:
        for agent in present:
            print(f"... spawn to first request: {agent.name}", file=sys.stderr, flush=True)
            rows += measure_spawn(agent, settings.n, settings.warmup)
    if "worktree" in parts or "execute" in parts:
        with tempfile.TemporaryDirectory(prefix="shim-perf-repo-") as tmp:
            path = Path(tmp) / "repo"
            base = make_repo(path, settings.files, settings.folders)
            repo = Repo(path, base, Path(tmp) / "trees", f"{settings.files:,}-file repo")
            if "worktree" in parts:
                print(f"... worktrees, {repo.label}", file=sys.stderr, flush=True)
                rows += measure_worktrees(repo, settings.n)
            if "execute" in parts:
                claude = [a for a in present if a.name == "claude"]
                if claude:
                    print("... one-turn claude task", file=sys.stderr, flush=True)
                    rows += measure_execute(claude[0], repo, settings)
                else:
                    skipped.append("execute: needs the claude CLI")
    info["loadavg_after"] = list(os.getloadavg())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "settings": attrs.asdict(settings),
        "machine": info,
        "rows": [row.to_dict() for row in rows],
        "table": table(rows),
        "skipped": skipped,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=3 instead of 7")
    parser.add_argument("-n", "--runs", type=int, default=None, help="runs per figure")
    parser.add_argument("--warmup", type=int, default=1, help="untimed CLI runs first (1)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--agents", default="claude,codex", help="CLIs to time (claude,codex)")
    parser.add_argument("--files", type=int, default=1000, help="files in the test repository")
    parser.add_argument("--folders", type=int, default=50, help="folders they are spread over")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args(argv)
    n = args.runs or (3 if args.quick else 7)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = sorted({*parts} - set(PARTS)) + sorted({*agents} - set(AGENTS))
    if unknown or n < 1 or args.files < 1 or args.folders < 1:
        parser.error(f"bad settings: {', '.join(unknown) or 'counts must be positive'}")
    settings = Settings(n, args.warmup, args.files, args.folders)
    report = run(settings, parts, agents)
    info = report["machine"]
    load = "  ".join(
        f"{when} {' '.join(f'{x:.2f}' for x in info[f'loadavg_{when}'])}"
        for when in ("before", "after")
    )
    print(
        f"{report['date']}, nproc {info['nproc']}, load average {load}; "
        f"python {info['python']}, {info['git']}, claude {info['claude']}, "
        f"codex {info['codex']}; N={n}, {report['seconds']} s\n"
    )
    print(report["table"])
    for reason in report["skipped"]:
        print(f"skipped: {reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
