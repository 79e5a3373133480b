"""The ``agent`` executor: runs a coding-agent CLI (Claude Code, Codex, Gemini CLI, OpenCode,
Aider, or any CLI through the generic adapter) on a task, in the task's git worktree.

Params (``task.params``)::

    agent: claude            # the adapter (``shim plugins`` lists them); required
    model: ...               # passed to the CLI
    max_turns: 30            # the CLI's own limit, where it has one
    max_budget_usd: 2.5      # the CLI's own spending cap, where it has one
    extra_args: [...]        # appended to the command line
    env: {NAME: value}       # added to the worker's environment (null removes a variable)
    command: /path/to/cli    # the binary (default: the adapter's, looked up on PATH)
    timeout: 3600            # seconds before the CLI is killed (default: the task's timeout)
    idle_timeout: 600        # seconds of silence before it is killed as stalled (default 600)
    prompt_template: file    # replaces the default prompt template (worker-wide:
                             # $SHIM_PROMPT_TEMPLATE)
    resolve: TASK            # set by the supervisor for ``on_conflict: agent``: start from the
                             # merge with TASK's branch, its conflicts left for the agent

The CLI inherits the worker's environment (so ``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL`` and
API keys set for the worker reach it), runs in the task's workspace in a process group of its own,
and gets SIGKILL if the worker dies. Its output goes to the task log line by line; the adapter
reads it into progress, the session id (checkpointed as soon as it is known, so a later attempt
resumes the same session), cost, tokens and a typed outcome, which the core acts on
(:mod:`shim_core.outcomes`).

Result: ``output = {"agent", "outcome", "session_id", "summary", "cost_usd", "tokens", "turns",
"branch", "commit"}``, ``files_modified`` from the task branch's diff.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from shim_core.contracts import AgentAdapter, AgentInvocation, AgentState, ExecutionContext
from shim_core.models import Task, TaskOutcome, TaskResult
from shim_plugins.executors import _git
from shim_plugins.executors._agent_process import AgentProcess, Ended, agent_environment
from shim_plugins.executors._agent_prompt import RESUME, build_prompt, load_template
from shim_plugins.executors._params import ParamError, integer, number
from shim_plugins.executors.shell import command_env

if TYPE_CHECKING:
    # The functions import shim_core.worktrees when they run: a worker that runs no agent task
    # does not load it (about 2 % of its start).
    from shim_core.worktrees import Workspace, Worktrees

#: Seconds of silence after which a headless agent is presumed hung and killed.
DEFAULT_IDLE_TIMEOUT = 600.0
#: Fewest seconds between two progress reports (each is a Redis round trip).
PROGRESS_INTERVAL = 0.5
#: Longest output line kept in the task log (tool results can hold whole files).
LOG_LINE_CHARS = 2_000
_KNOWN = frozenset(
    {
        "agent",
        "model",
        "max_turns",
        "max_budget_usd",
        "extra_args",
        "env",
        "command",
        "timeout",
        "idle_timeout",
        "prompt_template",
        "resolve",
    }
)
#: What an agent CLI's session id looks like (resumed from a checkpoint: checked first).
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


@attrs.frozen(kw_only=True)
class AgentParams:
    agent: str
    model: str | None
    max_turns: int | None
    max_budget_usd: float | None
    extra_args: tuple[str, ...]
    env: Mapping[str, Any]
    command: str | None
    timeout: float | None
    idle_timeout: float
    prompt_template: str | None
    #: A conflict resolution: the plan id of the task whose branch conflicted in the merge.
    resolve: str | None
    options: Mapping[str, Any]

    @classmethod
    def parse(cls, task: Task) -> AgentParams:
        """Read and check ``task.params``; raises ParamError."""
        params = task.params
        agent = params.get("agent")
        if not isinstance(agent, str) or not agent:
            raise ParamError("param 'agent' must name an agent adapter (e.g. claude, codex)")
        extra = params.get("extra_args", [])
        if not isinstance(extra, list | tuple) or not all(isinstance(a, str) for a in extra):
            raise ParamError("param 'extra_args' must be a list of strings")
        env = params.get("env") or {}
        if not isinstance(env, Mapping):
            raise ParamError(f"param 'env' must be a mapping, got {env!r}")
        default = task.timeout_ms / 1000 if task.timeout_ms else None
        turns = integer(params, "max_turns", 0, minimum=1) if "max_turns" in params else None
        return cls(
            agent=agent,
            model=_optional_text(params, "model"),
            max_turns=turns,
            max_budget_usd=number(params, "max_budget_usd", None, minimum=0.0001),
            extra_args=tuple(extra),
            env=env,
            command=_optional_text(params, "command"),
            timeout=number(params, "timeout", default, minimum=0.001, maximum=30 * 86400),
            idle_timeout=number(
                params, "idle_timeout", DEFAULT_IDLE_TIMEOUT, minimum=0.001, maximum=30 * 86400
            )
            or DEFAULT_IDLE_TIMEOUT,
            prompt_template=_optional_text(params, "prompt_template")
            or os.environ.get("SHIM_PROMPT_TEMPLATE")
            or None,
            resolve=_optional_text(params, "resolve"),
            options={k: v for k, v in params.items() if k not in _KNOWN},
        )


def _optional_text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ParamError(f"param {key!r} must be a non-empty string, got {value!r}")
    return value


def classify(state: AgentState, ended: Ended) -> TaskOutcome:
    """The outcome of a run, from the structured output and the exit status together (never
    from the exit code alone)."""
    if ended.how == "cancelled":
        return TaskOutcome.CANCELLED
    if ended.how == "timeout":
        return TaskOutcome.TIMED_OUT
    if ended.how == "idle":
        return TaskOutcome.STALLED
    if state.outcome is not None and state.outcome is not TaskOutcome.SUCCESS:
        return state.outcome
    if state.final and ended.exit_code == 0:
        return TaskOutcome.SUCCESS
    if ended.exit_code < 0:
        return TaskOutcome.CRASHED
    return TaskOutcome.FAILED


def describe(outcome: TaskOutcome, state: AgentState, ended: Ended, params: AgentParams) -> str:
    """The error message of an unsuccessful run."""
    detail = f": {state.error}" if state.error else ""
    match outcome:
        case TaskOutcome.STALLED:
            return f"stalled: no output for {params.idle_timeout:g} s (the agent was killed)"
        case TaskOutcome.TIMED_OUT:
            return f"timed out after {params.timeout:g} s (the agent was killed)"
        case TaskOutcome.CANCELLED:
            return "cancelled (the agent was killed)"
        case TaskOutcome.CRASHED:
            return f"the agent CLI died (exit status {ended.exit_code}){detail}"
        case TaskOutcome.FAILED if not state.final and not state.error:
            return f"the agent CLI ended without a final result (exit code {ended.exit_code})"
    return f"{outcome.value}{detail}"


@attrs.define
class _Run:
    """One CLI run's live state: the parsed output, the checkpointed session, progress pacing."""

    ctx: ExecutionContext
    adapter: AgentAdapter
    params: AgentParams
    cwd: Path
    state: AgentState
    checkpointed: str = ""
    last_progress: float = 0.0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def line(self, line: str) -> None:
        self.ctx.log.info("%s", line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS])
        with self.lock:
            message = self.adapter.feed(line, self.state)
            session = self.state.session_id
        if session and session != self.checkpointed:
            self.checkpointed = session
            self.ctx.checkpoint(
                {"agent": self.params.agent, "session_id": session, "workdir": str(self.cwd)}
            )
        now = time.monotonic()
        if message and now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            turns = self.state.turns
            limit = self.params.max_turns
            fraction = min(turns / limit, 0.95) if limit else min(1 - 0.85**turns, 0.95)
            self.ctx.progress(fraction, message[:200])


@attrs.define
class AgentExecutor:
    """Runs agent tasks (see the module documentation)."""

    name: str = "agent"
    task_types: tuple[str, ...] = ()
    kill_grace: float = 2.0
    poll_interval: float = 0.1
    #: Where task worktrees live (None: ``$SHIM_WORKTREES`` or ``~/.cache/shim/worktrees``).
    worktree_root: Path | None = None

    def execute(self, task: Task, ctx: ExecutionContext) -> TaskResult:
        """Run the task's agent in its workspace and report a typed outcome."""
        from shim_core.worktrees import WorkspaceError, conflict_markers

        try:
            params = AgentParams.parse(task)
            template = load_template(params.prompt_template)
        except ParamError as exc:
            return _failure(TaskOutcome.FAILED, str(exc), params=None)
        adapter = ctx.agent_adapters.get(params.agent)
        if adapter is None:
            known = ", ".join(sorted(ctx.agent_adapters)) or "none"
            return _failure(
                TaskOutcome.CLI_MISSING,
                f"agent adapter {params.agent!r} is not installed on this worker (known: {known})",
                params,
            )
        wanted = params.command or adapter.command
        binary = shutil.which(wanted) if wanted else ""
        if binary is None:
            return _failure(
                TaskOutcome.CLI_MISSING, f"agent CLI {wanted!r} not found on PATH", params
            )
        if ctx.cancelled.is_set():
            return _failure(TaskOutcome.CANCELLED, "cancelled before the agent started", params)
        trees = self._worktrees(task)
        try:
            workspace = _prepare(trees, task, params) if trees else None
        except WorkspaceError as exc:
            return _failure(TaskOutcome.FAILED, f"workspace: {exc}", params)
        cwd = workspace.path if workspace else _cwd(task, ctx)
        if not cwd.is_dir():
            return _failure(
                TaskOutcome.FAILED, f"workspace {cwd} does not exist on this worker", params
            )
        before = None if workspace else _git.snapshot(cwd)
        job = _Job(ctx, adapter, binary or "", params, cwd)
        try:
            state, ended = self._run(task, job, template, workspace)
            outcome = classify(state, ended)
            if workspace is not None and params.resolve and outcome is TaskOutcome.SUCCESS:
                left = conflict_markers(workspace.path)
                if left:
                    outcome = TaskOutcome.FAILED
                    state.error = "conflict markers left in " + ", ".join(left)
            commit, files = "", _git.changed(before, _git.snapshot(cwd)) if not workspace else ()
            # Whatever happened (even a cancellation or a timeout), the work goes onto the task
            # branch: the next attempt starts from it. The worktree's lock keeps any successor
            # on this machine out until then.
            if trees is not None and workspace is not None:
                commit, files = trees.commit(workspace, f"shim: {task.title or task.id}")
                trees.publish(workspace)
        except ValueError as exc:  # the adapter refused its options (e.g. a bad argv template)
            return _failure(TaskOutcome.FAILED, str(exc), params)
        except FileNotFoundError as exc:  # a generic adapter's argv names no binary on PATH
            name = exc.filename or "?"
            return _failure(TaskOutcome.CLI_MISSING, f"agent CLI {name!r} not found", params)
        except (OSError, WorkspaceError) as exc:
            return _failure(TaskOutcome.CRASHED, f"{type(exc).__name__}: {exc}", params)
        finally:
            if trees is not None and workspace is not None:
                trees.remove(workspace)
        return _result(params, state, ended, outcome, _Change(workspace, commit, files))

    def _worktrees(self, task: Task) -> Worktrees | None:
        """The task's repository when it works in a worktree of its own."""
        from shim_core.worktrees import Worktrees

        context = task.context
        if context.workspace != "worktree" or not context.repo or not task.run_id:
            return None
        return Worktrees(context.repo, self.worktree_root)

    def _run(
        self, task: Task, job: _Job, template: str, workspace: Workspace | None
    ) -> tuple[AgentState, Ended]:
        ctx, params = job.ctx, job.params
        resume = ctx.resume_state or {}
        session = resume.get("session_id") if resume.get("agent") == params.agent else None
        if isinstance(session, str) and session and not _SESSION_ID.match(session):
            # A checkpoint is data anyone with Redis write access could forge: a session id
            # that is not one must never reach a command line (``--flag`` would be an option).
            ctx.log.warning("ignoring the checkpoint's session id %.80r: not a session id", session)
            session = None
        if isinstance(session, str) and session:
            ctx.log.info("resuming %s session %s", params.agent, session)
            state, ended = self._attempt(job, RESUME, session)
            if not _resume_failed(state, ended):
                _charge_only_this_attempt(job, state, resume.get("cost_usd"))
                return state, ended
            ctx.log.warning(
                "session %s could not be resumed (%s); starting a fresh one",
                session,
                state.error or "no result",
            )
            notes = _earlier_work(workspace)
            prompt = build_prompt(task, ctx.dependency_results, template, notes=notes)
            return self._attempt(job, prompt, None)
        return self._attempt(job, build_prompt(task, ctx.dependency_results, template), None)

    def _attempt(self, job: _Job, prompt: str, session: str | None) -> tuple[AgentState, Ended]:
        from shim_core.worktrees import WORKTREE_MARK

        ctx, adapter, params, cwd = job.ctx, job.adapter, job.params, job.cwd
        with tempfile.TemporaryDirectory(prefix="shim-agent-") as scratch:
            prompt_file = Path(scratch) / "prompt.md"
            prompt_file.write_text(prompt, encoding="utf-8")
            invocation = AgentInvocation(
                prompt=prompt,
                prompt_file=prompt_file,
                workdir=cwd,
                model=params.model,
                max_turns=params.max_turns,
                max_budget_usd=params.max_budget_usd,
                resume_session=session,
                extra_args=params.extra_args,
                options=params.options,
            )
            argv = adapter.argv(job.binary, invocation)
            env = command_env(params.env, agent_environment(adapter.env(invocation)))
            env["PWD"] = str(cwd)  # CLIs that trust $PWD (OpenCode does) must see their workspace
            env[WORKTREE_MARK] = str(cwd)  # what its tools carry: see kill_leftovers
            ctx.log.info("running %s", _shown(argv, prompt))
            run = _Run(ctx, adapter, params, cwd, AgentState(options=params.options))
            process = AgentProcess(
                ctx, run.line, params.idle_timeout, self.kill_grace, self.poll_interval
            )
            ended = process.run(argv, cwd=cwd, env=env, timeout=params.timeout)
            adapter.finish(ended.exit_code, run.state)
            if run.state.session_id and run.state.cost_usd is not None:
                # what the session has cost so far, for a later attempt that resumes it
                ctx.checkpoint(
                    {
                        "agent": params.agent,
                        "session_id": run.state.session_id,
                        "workdir": str(cwd),
                        "cost_usd": run.state.cost_usd,
                    }
                )
            return run.state, ended


def _prepare(trees: Worktrees, task: Task, params: AgentParams) -> Workspace:
    """The task's worktree: base plus its dependencies' branches (or, for a conflict
    resolution, the conflicting branch merged in with its conflicts left in place)."""
    assert task.run_id is not None
    return trees.prepare(
        task.run_id,
        _plan_id(task.id),
        task.context.base,
        [_plan_id(d) for d in task.dependencies],
        conflicted_with=params.resolve,
    )


def _charge_only_this_attempt(job: _Job, state: AgentState, earlier: Any) -> None:
    """A CLI whose reported cost covers the whole session (Claude Code's ``total_cost_usd``
    does after ``--resume``) would charge the run for earlier attempts again: keep only what
    this attempt added."""
    if not getattr(job.adapter, "cumulative_cost", False) or state.cost_usd is None:
        return
    if isinstance(earlier, int | float) and not isinstance(earlier, bool) and earlier > 0:
        state.cost_usd = max(state.cost_usd - float(earlier), 0.0)


def _resume_failed(state: AgentState, ended: Ended) -> bool:
    """A resumed run that ended by itself without doing anything (e.g. Claude Code's "No
    conversation found": an error result after no turn), not for a reason a fresh session would
    hit as well."""
    if ended.how or state.outcome in (TaskOutcome.RATE_LIMITED, TaskOutcome.AUTH_FAILED):
        return False
    return not state.final or (state.outcome is TaskOutcome.FAILED and state.turns == 0)


def _earlier_work(workspace: Workspace | None) -> str:
    """Notes for a fresh session after a failed resume: the commits already on the branch."""
    from shim_core.worktrees import git

    note = "An earlier attempt at this task was interrupted and its session is lost."
    if workspace is None:
        return note + " Check the current state of the files before you start."
    log = workspace.own_commits().strip()
    status = git(workspace.path, "status", "--short", check=False).strip()
    parts = [note, "Continue from the work it left on this branch."]
    if log:
        parts.append(f"Its commits:\n{log}")
    if status:
        parts.append(f"Its uncommitted changes:\n{status}")
    return "\n\n".join(parts)


@attrs.frozen
class _Job:
    """What one execution runs: the adapter and binary, with the task's params, in ``cwd``."""

    ctx: ExecutionContext
    adapter: AgentAdapter
    binary: str
    params: AgentParams
    cwd: Path


@attrs.frozen
class _Change:
    """What the run left in its workspace."""

    workspace: Workspace | None
    commit: str
    files: tuple[str, ...]


def _result(
    params: AgentParams, state: AgentState, ended: Ended, outcome: TaskOutcome, change: _Change
) -> TaskResult:
    workspace = change.workspace
    tokens = None
    if state.input_tokens is not None or state.output_tokens is not None:
        tokens = {"input": state.input_tokens or 0, "output": state.output_tokens or 0}
    output = {
        "agent": params.agent,
        "outcome": outcome.value,
        "session_id": state.session_id or None,
        "summary": state.summary,
        "cost_usd": state.cost_usd,
        "tokens": tokens,
        "turns": state.turns,
        "branch": workspace.branch if workspace else None,
        "commit": change.commit or None,
    }
    success = outcome is TaskOutcome.SUCCESS
    return TaskResult(
        success=success,
        output=output,
        files_modified=change.files,
        error=None if success else describe(outcome, state, ended, params),
        outcome=outcome,
        cost_usd=state.cost_usd,
        retry_at_ms=state.rate_limit_reset_ms if outcome is TaskOutcome.RATE_LIMITED else None,
    )


def _failure(outcome: TaskOutcome, error: str, params: AgentParams | None) -> TaskResult:
    output = {"agent": params.agent if params else None, "outcome": outcome.value}
    return TaskResult(success=False, output=output, error=error, outcome=outcome)


def _cwd(task: Task, ctx: ExecutionContext) -> Path:
    return Path(task.context.project_path) if task.context.project_path else ctx.workdir


def _plan_id(task_id: str) -> str:
    return task_id.split(":", 1)[1] if ":" in task_id else task_id


def _shown(argv: list[str], prompt: str) -> str:
    """The command line for the log, with the prompt elided."""
    return " ".join("<prompt>" if a == prompt else a for a in argv)
