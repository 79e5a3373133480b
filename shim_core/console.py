"""What the CLI shows: plans with their waves, live progress, and run reports."""

from __future__ import annotations

import os
import sys
from typing import IO

import click

from shim_core.models import TaskStatus
from shim_core.supervisor.graph import DecompositionPlan
from shim_core.supervisor.progress import OverallProgress
from shim_core.supervisor.runs import RunReport, plan_id_of
from shim_core.worktrees import MergeReport

BAR_WIDTH = 24
_MARK = {"complete": "ok", "failed": "FAIL", "cancelled": "skip"}
_FINAL = frozenset(_MARK)
#: Columns assumed when the output is not a terminal that can say.
DEFAULT_WIDTH = 80
#: Widest plan id column of the live view (longer ids are cut).
ID_WIDTH = 24


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(fraction, 1.0)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def seconds(value: float | None) -> str:
    if value is None:
        return "?"
    value = max(value, 0.0)
    if value < 60:
        return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def render_plan(d: DecompositionPlan, workers: int | None = None) -> str:
    """The tasks, their dependencies and the waves of a decomposed plan."""
    plan = d.plan
    lines = [f"Plan {plan.name!r}: {len(plan.tasks)} task(s) in {len(d.waves)} wave(s)"]
    width = max((len(t.id) for t in plan.tasks), default=4)
    for task in plan.tasks:
        deps = f"after {', '.join(task.deps)}" if task.deps else "no dependencies"
        executor = task.executor or "default"
        lines.append(
            f"  {task.id:<{width}}  {task.type:<8} {task.priority.value:<8} "
            f"{executor:<8} ~{seconds(d.estimates.get(task.id))}  {deps}  {task.title}"
        )
    lines.append("Waves:")
    for n, wave in enumerate(d.waves, 1):
        lines.append(f"  {n}: {', '.join(wave)}" + ("  (parallel)" if len(wave) > 1 else ""))
    estimate = f"~{seconds(d.makespan(workers))} with {workers} worker(s), " if workers else ""
    lines.append(
        f"Estimate: {estimate}~{seconds(d.estimated_total_duration)} with unlimited "
        f"workers, ~{seconds(d.serial_duration)} serial; parallelisation factor "
        f"{d.parallelization_factor:.2f}x"
    )
    return "\n".join(lines)


def render_report(report: RunReport) -> str:
    finished = sum(n for status, n in report.summary.items() if status in _FINAL)
    total = sum(report.summary.values())
    if finished < total:  # still queued or running: no verdict, no duration yet
        state = f"in progress, {finished}/{total} finished"
    else:
        verdict = "all tasks complete" if report.ok else "NOT complete"
        state = f"{verdict} in {seconds(report.duration_ms / 1000)}"
    lines = [f"Run {report.run_id} ({report.name}): {state}"]
    for t in report.tasks:
        took = seconds(t.duration_ms / 1000) if t.duration_ms is not None else "-"
        detail = ""
        if t.result is not None and t.result.cost_usd is not None:
            detail = f"  ${t.result.cost_usd:.4f}"
        if t.result is not None and t.result.error:
            detail += f"  error: {t.result.error}"
        lines.append(
            f"  {_MARK.get(t.status, '?')} {t.id:<16} {t.status:<9} attempts "
            f"{t.attempts}  {took:>6}  {t.worker or '-'}{detail}"
        )
    summary = ", ".join(f"{n} {s}" for s, n in sorted(report.summary.items()))
    lines.append(f"Summary: {summary}")
    if report.cost_usd or report.budget_usd:
        budget = f" of a ${report.budget_usd:g} budget" if report.budget_usd else ""
        lines.append(f"Agents spent ${report.cost_usd:.4f}{budget}")
    if report.merge is not None:
        lines.append(render_merge(report.merge))
    return "\n".join(lines)


def render_merge(merge: MergeReport) -> str:
    """How a run's task branches came together."""
    merged = ", ".join(merge.merged) or "nothing"
    lines = [f"Merged into {merge.branch} (from {merge.base[:10]}): {merged}"]
    for conflict in merge.conflicts:
        files = ", ".join(conflict.files) or "?"
        lines.append(
            f"  conflict merging task {conflict.task}: {files} (every branch is kept; fix the "
            f"branch and run `shim merge` again)"
        )
    return "\n".join(lines)


def finished_count(p: OverallProgress) -> int:
    """Tasks that reached an end (complete, failed or cancelled): what the bar's 100 % means."""
    return p.completed_tasks + p.failed_tasks + p.cancelled_tasks


def progress_line(p: OverallProgress, width: int = DEFAULT_WIDTH) -> str:
    """The one-line summary of a run, fitted to ``width`` columns: the bar shrinks first, then
    goes; the counters always agree with it (100 % is every task finished)."""
    counts = (
        f"{p.percent_complete:4.0%}  {finished_count(p)}/{p.total_tasks} finished, "
        f"{p.running_tasks} running, {p.queued_tasks} queued"
    )
    if p.failed_tasks:
        counts += f", {p.failed_tasks} failed"
    if not p.finished:
        counts += f"  ETA {seconds(p.estimated_time_remaining)}  workers {p.live_workers}"
    room = width - 1 - len(counts) - 3  # the bar's brackets and a space; one column spare
    if room >= 8:
        return f"{bar(p.percent_complete, min(room, BAR_WIDTH))} {counts}"
    return fit(counts, width)


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width - 1`` columns (a full last column makes some terminals wrap)."""
    return line if len(line) < width else line[: max(width - 2, 0)] + "~"


def terminal_width(out: IO[str]) -> int:
    """Columns of the terminal behind ``out`` (DEFAULT_WIDTH when it cannot say)."""
    try:
        return os.get_terminal_size(out.fileno()).columns or DEFAULT_WIDTH
    except (OSError, ValueError, AttributeError):
        return DEFAULT_WIDTH


class LiveProgress:
    """Progress while a run executes: a redrawn panel on a terminal, fitted to its width so a
    redraw never wraps, one line per change otherwise (logs, CI)."""

    def __init__(
        self,
        out: IO[str] | None = None,
        *,
        interactive: bool | None = None,
        width: int | None = None,
    ) -> None:
        self.out = out or sys.stderr
        self.interactive = self.out.isatty() if interactive is None else interactive
        self._width = width
        self._drawn = 0
        self._seen: dict[str, tuple[TaskStatus, int]] = {}

    def update(self, progress: OverallProgress) -> None:
        if self.interactive:
            self._redraw(progress)
        else:
            self._log_changes(progress)

    def close(self) -> None:
        if self.interactive and self._drawn:
            self.out.write("\n")
            self.out.flush()

    def panel(self, p: OverallProgress, width: int) -> list[str]:
        """The lines of one redraw: the summary, then one aligned line per running task."""
        active = sorted((k, e) for k, e in p.task_breakdown.items() if e.status.is_active)
        ids = {k: plan_id_of(k) for k, _ in active}
        id_width = min(max((len(i) for i in ids.values()), default=4), ID_WIDTH)
        workers = max((len(e.worker_id or "") for _, e in active), default=0)
        lines = [progress_line(p, width)]
        for task_id, entry in active:
            line = (
                f"  {fit(ids[task_id], id_width + 1):<{id_width}} {bar(entry.progress, 10)} "
                f"{entry.progress:4.0%}  {entry.worker_id or '':<{workers}}  {entry.message}"
            )
            lines.append(fit(line.rstrip(), width))
        return lines

    def _redraw(self, p: OverallProgress) -> None:
        lines = self.panel(p, self._width or terminal_width(self.out))
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def _log_changes(self, p: OverallProgress) -> None:
        # In the order the changes happened, so a dependency's completion comes before what it
        # released.
        changes = sorted(p.task_breakdown.items(), key=lambda kv: (kv[1].last_update, kv[0]))
        for task_id, entry in changes:
            key = (entry.status, entry.attempts)
            if self._seen.get(task_id) == key or entry.status in (
                TaskStatus.WAITING,
                TaskStatus.PENDING,
            ):
                continue
            self._seen[task_id] = key
            who = f" on {entry.worker_id}" if entry.worker_id and entry.status.is_active else ""
            click.echo(
                f"  {entry.status.value:<9} {plan_id_of(task_id)} (attempt "
                f"{entry.attempts}){who}  [{finished_count(p)}/{p.total_tasks} finished]",
                file=self.out,
            )
