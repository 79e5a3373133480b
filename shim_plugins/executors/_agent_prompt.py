"""The agent's prompt: the task, what "done" means, and what each dependency did (its summary,
files and branch), so the agent on ``b`` knows what ``a`` changed without a person copying it.

The template is a file with ``$title``, ``$description``, ``$files``, ``$acceptance``,
``$dependencies`` and ``$id`` placeholders (``string.Template``); ``params.prompt_template`` (or a
plan's ``prompt_template``) names a replacement for the default ``agent_prompt.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template

from shim_core.models import Task, TaskResult
from shim_plugins.executors._params import ParamError

#: Longest dependency summary carried into a prompt (the rest is in that task's result).
DEPENDENCY_SUMMARY_CHARS = 4_000
#: Files listed per dependency.
DEPENDENCY_FILES = 50
#: A prompt is passed as one argument: Linux refuses a single argument over 128 KiB.
MAX_PROMPT_CHARS = 100_000

RESUME = (
    "You were interrupted (the machine running you stopped). Continue the task from where you "
    "left off: check the state of the files first, finish the work, then reply with a short "
    "summary of everything you changed."
)


def load_template(path: str | None) -> str:
    if not path:
        return (resources.files("shim_plugins.executors") / "agent_prompt.md").read_text("utf-8")
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamError(f"cannot read prompt template {path}: {exc.strerror or exc}") from None


def build_prompt(
    task: Task,
    dependencies: Mapping[str, TaskResult],
    template: str,
    *,
    notes: str = "",
) -> str:
    """The prompt for ``task``; ``notes`` are added at the end (e.g. an earlier attempt's
    commits when its session could not be resumed)."""
    files = _section("Files to look at", [f"- {f}" for f in task.context.files])
    acceptance = _section("Done means", [f"- {c}" for c in task.context.acceptance])
    deps = [_dependency(dep, dependencies.get(dep)) for dep in task.dependencies]
    done = _section("Already done by the tasks this one depends on", deps)
    prompt = Template(template).safe_substitute(
        id=_plan_id(task.id),
        title=task.title or _plan_id(task.id),
        description=task.description or task.title,
        files=files,
        acceptance=acceptance,
        dependencies=done,
    )
    if notes:
        prompt = f"{prompt.rstrip()}\n\n{notes}\n"
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[: MAX_PROMPT_CHARS - 40] + "\n[prompt cut to fit the command line]\n"
    return prompt


def _section(title: str, lines: Sequence[str]) -> str:
    return f"\n## {title}\n\n" + "\n".join(lines) + "\n" if lines else ""


def _plan_id(task_id: str) -> str:
    return task_id.split(":", 1)[1] if ":" in task_id else task_id


def _dependency(task_id: str, result: TaskResult | None) -> str:
    name = _plan_id(task_id)
    if result is None:
        return f"- `{name}`: no result recorded"
    output = result.output if isinstance(result.output, dict) else {}
    summary = str(output.get("summary") or "").strip()
    if not summary and result.output is not None and not output:
        summary = str(result.output)
    if len(summary) > DEPENDENCY_SUMMARY_CHARS:
        summary = summary[:DEPENDENCY_SUMMARY_CHARS] + " [...]"
    lines = [f"### `{name}`" + (f" (branch `{output['branch']}`)" if output.get("branch") else "")]
    if summary:
        lines.append(summary)
    files = list(result.files_modified[:DEPENDENCY_FILES])
    if files:
        more = len(result.files_modified) - len(files)
        lines.append(
            "Files it changed: " + ", ".join(files) + (f" and {more} more" if more else "")
        )
    return "\n".join(lines) + "\n"
