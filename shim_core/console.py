"""What the CLI shows: plans with their waves, live progress, and run reports."""

from __future__ import annotations

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
    lines = [
        f"Run {report.run_id} ({report.name}): "
        + ("all tasks complete" if report.ok else "NOT complete")
        + f" in {seconds(report.duration_ms / 1000)}"
    ]
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


class LiveProgress:
    """Progress while a run executes: a redrawn panel on a terminal, one line per change
    otherwise (logs, CI)."""

    def __init__(self, out: IO[str] | None = None, *, interactive: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.interactive = self.out.isatty() if interactive is None else interactive
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

    def _redraw(self, p: OverallProgress) -> None:
        lines = [
            f"{bar(p.percent_complete)} {p.percent_complete:4.0%}  "
            f"{p.completed_tasks}/{p.total_tasks} done, {p.running_tasks} running, "
            f"{p.queued_tasks} queued, {p.failed_tasks} failed  ETA "
            f"{seconds(p.estimated_time_remaining)}  workers {p.live_workers}"
        ]
        for task_id, entry in sorted(p.task_breakdown.items()):
            if entry.status.is_active:
                lines.append(
                    f"  {plan_id_of(task_id):<16} {bar(entry.progress, 16)} "
                    f"{entry.progress:4.0%} {entry.worker_id or ''}  {entry.message}"
                )
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
                f"{entry.attempts}){who}  [{p.completed_tasks}/{p.total_tasks} done]",
                file=self.out,
            )
