"""The ``agent`` strategy: a coding-agent CLI turns a free-text request into a plan.

The agent (Claude Code by default) runs headless in the repository with a prompt holding the
request, the plan schema as a JSON example and the repository's file list, and answers with one
JSON object. That object goes through :func:`~shim_core.supervisor.plan.parse_plan`; when it is
missing or refused, the agent gets one repair round with the problems and its answer, after
which the strategy gives up with a :class:`~shim_core.supervisor.plan.PlanError`.

Context keys (besides those :class:`~shim_core.supervisor.decomposer.TaskDecomposer` fills in:
``agent_adapters``, ``executors``, ``types``)::

    agent: claude              # the adapter that asks the agent (default claude)
    agent_command: /path/cli   # its binary (default: the adapter's, looked up on PATH)
    agent_model: ...           # the model the CLI uses
    repo: /path/to/repo        # where the agent runs and whose files it is shown (default: cwd)
    timeout: 600               # seconds before one agent run is killed
    max_turns: 3               # the CLI's turn limit for one run

The CLI inherits this process's environment (its API keys and base URLs) over the adapter's
defaults, runs in a session of its own, and is killed with its process group on timeout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from shim_core.contracts import AgentAdapter, AgentInvocation, AgentState
from shim_core.models import TaskOutcome
from shim_core.supervisor.plan import Plan, PlanError, parse_plan
from shim_plugins.agents._common import SUMMARY_CHARS
from shim_plugins.executors._agent_process import agent_environment
from shim_plugins.executors._process import start_in_group, terminate_group

DEFAULT_AGENT = "claude"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_TURNS = 3
#: Repository paths shown to the agent.
MAX_FILES = 300
#: Directories left out of the file list of a directory that is not a git repository.
SKIPPED_DIRS = frozenset({".git", ".venv", "node_modules", "__pycache__"})
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)

_EXAMPLE = {
    "name": "short-plan-name",
    "tasks": [
        {
            "id": "schema",
            "title": "Design the database schema",
            "description": "What to do, in enough detail for an engineer who has not seen "
            "the request.",
            "type": "code",
            "deps": [],
            "files": ["src/models.py"],
            "acceptance": ["the migration applies cleanly"],
            "executor": "agent",
            "params": {"agent": "AGENT"},
        },
        {
            "id": "api",
            "title": "Add the API endpoints",
            "description": "...",
            "type": "code",
            "deps": ["schema"],
            "files": ["src/api.py"],
            "acceptance": ["the endpoints have tests that pass"],
            "executor": "agent",
            "params": {"agent": "AGENT"},
        },
    ],
}


@attrs.frozen
class AgentDecomposer:
    """Asks a coding-agent CLI to write the plan of a free-text request (see the module docs)."""

    name: str = "agent"

    def decompose(self, request: str, context: Mapping[str, Any]) -> Plan:
        """The plan the agent writes for ``request``; raises PlanError when the agent or its
        CLI is missing, a run fails, or its answer is still invalid after one repair round."""
        if not request.strip():
            raise PlanError(["agent: empty request"])
        job = _Job.prepare(context)
        prompt = _prompt(request, job, context)
        answer = job.ask(prompt)
        plan, problems = _read_plan(answer, job.agent, context)
        if plan is not None:
            return plan
        answer = job.ask(_repair_prompt(prompt, answer, problems))
        plan, problems = _read_plan(answer, job.agent, context)
        if plan is not None:
            return plan
        raise PlanError(["the agent's plan is invalid after one repair round:", *problems])


@attrs.frozen(kw_only=True)
class _Job:
    """One agent CLI to ask, where and how."""

    agent: str
    adapter: AgentAdapter
    binary: str
    cwd: Path
    model: str | None
    timeout: float
    max_turns: int

    @classmethod
    def prepare(cls, context: Mapping[str, Any]) -> _Job:
        """The adapter, binary and directory named by ``context``; raises PlanError."""
        agent = str(context.get("agent") or DEFAULT_AGENT)
        adapter = (context.get("agent_adapters") or {}).get(agent)
        if adapter is None:
            known = ", ".join(sorted(context.get("agent_adapters") or {})) or "none"
            raise PlanError([f"agent adapter {agent!r} is not installed (known: {known})"])
        wanted = str(context.get("agent_command") or adapter.command)
        binary = shutil.which(wanted)
        if binary is None:
            raise PlanError([f"agent CLI {wanted!r} not found on PATH"])
        cwd = Path(str(context.get("repo") or Path.cwd())).expanduser()
        if not cwd.is_dir():
            raise PlanError([f"agent: repo {str(cwd)!r} is not a directory"])
        return cls(
            agent=agent,
            adapter=adapter,
            binary=binary,
            cwd=cwd,
            model=context.get("agent_model") or None,
            timeout=_positive(context, "timeout", DEFAULT_TIMEOUT),
            max_turns=int(_positive(context, "max_turns", DEFAULT_MAX_TURNS)),
        )

    def ask(self, prompt: str) -> str:
        """Run the agent on ``prompt`` in a fresh session; its final text. Raises PlanError
        when the run fails."""
        with tempfile.TemporaryDirectory(prefix="shim-decompose-") as scratch:
            prompt_file = Path(scratch) / "prompt.md"
            prompt_file.write_text(prompt, encoding="utf-8")
            invocation = AgentInvocation(
                prompt=prompt,
                prompt_file=prompt_file,
                workdir=self.cwd,
                model=self.model,
                max_turns=self.max_turns,
                read_only=True,  # planning reads the repository; it must not change it
            )
            state, exit_code = self._run(invocation)
        if state.outcome is not None and state.outcome is not TaskOutcome.SUCCESS:
            detail = f": {state.error}" if state.error else ""
            raise PlanError([f"the agent {self.agent!r} failed ({state.outcome.value}){detail}"])
        if not state.final or exit_code != 0:
            raise PlanError(
                [f"the agent {self.agent!r} ended without a final result (exit code {exit_code})"]
            )
        return state.summary

    def _run(self, invocation: AgentInvocation) -> tuple[AgentState, int]:
        """Start the CLI in its own session, feed its output to the adapter, and settle it."""
        state = AgentState(options=invocation.options)
        try:
            argv = self.adapter.argv(self.binary, invocation)
            env = agent_environment(self.adapter.env(invocation))
            proc = start_in_group(argv, cwd=self.cwd, env=env)
        except (OSError, ValueError) as exc:
            raise PlanError([f"cannot run the agent {self.agent!r}: {exc}"]) from exc
        timed_out = threading.Event()
        timer = threading.Timer(self.timeout, _kill_group, (proc, timed_out))
        timer.start()
        try:
            _feed_all(proc, self.adapter, state)
        finally:
            timer.cancel()
            terminate_group(proc, 2.0)
        if timed_out.is_set():
            raise PlanError([f"the agent {self.agent!r} timed out after {self.timeout:g} s"])
        self.adapter.finish(proc.returncode, state)
        return state, proc.returncode


def _positive(context: Mapping[str, Any], key: str, default: float) -> float:
    """``context[key]`` as a positive number, else ``default`` when unset; raises PlanError."""
    value = context.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise PlanError([f"agent: {key!r} must be a positive number, got {value!r}"])
    return float(value)


def _feed_all(proc: subprocess.Popen[str], adapter: AgentAdapter, state: AgentState) -> None:
    """Every output line to the adapter; a line it chokes on is counted unknown."""
    assert proc.stdout is not None  # stdout=PIPE
    with proc.stdout:
        for raw in proc.stdout:
            try:
                adapter.feed(raw.rstrip("\r\n"), state)
            except Exception:  # an adapter bug must not lose the rest of the answer
                state.unknown_lines += 1


def _kill_group(proc: subprocess.Popen[str], timed_out: threading.Event) -> None:
    timed_out.set()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- the prompts -------------------------------------------------------------------------------


def _prompt(request: str, job: _Job, context: Mapping[str, Any]) -> str:
    """The first prompt: the request, the schema, the repository's files, the answer's form."""
    example = json.dumps(_EXAMPLE, indent=2).replace('"AGENT"', json.dumps(job.agent))
    rules = [
        "Split the request into a few focused tasks that can each be done by one coding agent "
        "in one session; use deps for tasks that need another task's result.",
        "Task keys: id (1-64 letters, digits, '_', '.', '-'; unique), title, description, type, "
        "deps (ids of other tasks), files, acceptance (what 'done' means), executor, params. "
        "Top-level keys: name, tasks.",
        f'Give every task "executor": "agent" and "params": {{"agent": "{job.agent}"}} unless '
        "the request says otherwise.",
    ]
    if context.get("types"):
        rules.append(f"Allowed types: {', '.join(map(str, context['types']))}.")
    if context.get("executors"):
        rules.append(f"Available executors: {', '.join(map(str, context['executors']))}.")
    rules.append(
        "Do not change any file. Keep the answer under 6000 characters. Answer with ONLY one "
        "JSON object (the plan), no other text."
    )
    return "\n\n".join(
        [
            "You are planning work on the repository in the current directory. Turn the request "
            "below into a plan of tasks (a DAG).",
            f"REQUEST:\n{request.strip()}",
            "\n".join(f"- {rule}" for rule in rules),
            f"The plan's form (JSON):\n{example}",
            f"Files in the repository:\n{_file_list(job.cwd)}",
        ]
    )


def _repair_prompt(prompt: str, answer: str, problems: list[str]) -> str:
    """The repair round's prompt: the first one, the answer, and what is wrong with it."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        f"{prompt}\n\nA previous answer to this was refused.\n\nPREVIOUS ANSWER:\n{answer}\n\n"
        f"PROBLEMS:\n{listed}\n\nAnswer with ONLY the corrected plan as one JSON object, "
        "no other text."
    )


def _file_list(cwd: Path) -> str:
    """The first MAX_FILES paths of ``git ls-files``, or of a directory walk outside git."""
    try:
        done = subprocess.run(
            ["git", "ls-files"], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
        paths = done.stdout.splitlines() if done.returncode == 0 else _walk(cwd)
    except (OSError, subprocess.SubprocessError):
        paths = _walk(cwd)
    shown = "\n".join(paths[:MAX_FILES]) or "(no files)"
    more = len(paths) - MAX_FILES
    return shown + (f"\n... and {more} more" if more > 0 else "")


def _walk(cwd: Path) -> list[str]:
    """Relative file paths under ``cwd`` (one past MAX_FILES at most), sorted per directory."""
    paths: list[str] = []
    for root, dirs, files in os.walk(cwd):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        paths += [os.path.relpath(os.path.join(root, name), cwd) for name in sorted(files)]
        if len(paths) > MAX_FILES:
            break
    return paths[: MAX_FILES + 1]


# --- reading the answer ------------------------------------------------------------------------


def _read_plan(
    answer: str, agent: str, context: Mapping[str, Any]
) -> tuple[Plan | None, list[str]]:
    """The plan in the agent's answer, or None and every problem with it."""
    data, problem = extract_json(answer)
    if problem:
        if len(answer) >= SUMMARY_CHARS:
            problem += f" (the answer was cut at {SUMMARY_CHARS} characters: make it shorter)"
        return None, [problem]
    try:
        plan = parse_plan(
            data,
            source=f"agent:{agent}",
            executors=context.get("executors"),
            types=context.get("types"),
        )
    except PlanError as exc:
        return None, exc.problems
    return plan, []


def extract_json(text: str) -> tuple[Any, str]:
    """The JSON object in ``text`` (in a ```json fence, else from the first ``{`` to the last
    ``}``) and ``""``, or None and what is wrong."""
    fenced = [block for block in _FENCE.findall(text) if "{" in block]
    body = fenced[0] if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return None, "the answer holds no JSON object"
    try:
        return json.loads(body[start : end + 1]), ""
    except ValueError as exc:
        try:  # an object followed by text with braces in it
            return json.JSONDecoder().raw_decode(body, start)[0], ""
        except ValueError:
            return None, f"the answer is not valid JSON: {exc}"
