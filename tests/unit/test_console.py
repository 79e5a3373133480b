"""What the CLI draws: the live view fits the terminal at any width, its counters agree with its
bar, and a report never gives a verdict on a run that has not ended."""

from __future__ import annotations

import io

import pytest

from shim_core.console import LiveProgress, fit, progress_line, render_report, terminal_width
from shim_core.models import TaskStatus
from shim_core.supervisor.progress import OverallProgress, TaskProgress
from shim_core.supervisor.runs import RunReport


def overall(statuses: dict[str, TaskStatus], *, workers: int = 3) -> OverallProgress:
    tasks = {
        f"run1:{name}": TaskProgress(
            status=status,
            progress=0.5 if status is TaskStatus.RUNNING else 0.0,
            worker_id="vm-12345-abcdef" if status is TaskStatus.RUNNING else None,
            last_update=float(n),
            attempts=1,
            message="step 2 of 4: a long message that goes on " * 4,
        )
        for n, (name, status) in enumerate(statuses.items())
    }

    def count(*wanted: TaskStatus) -> int:
        return sum(1 for s in statuses.values() if s in wanted)

    finished = count(TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED)
    done = finished + 0.5 * count(TaskStatus.RUNNING)
    return OverallProgress(
        total_tasks=len(statuses),
        completed_tasks=count(TaskStatus.COMPLETE),
        failed_tasks=count(TaskStatus.FAILED),
        cancelled_tasks=count(TaskStatus.CANCELLED),
        running_tasks=count(TaskStatus.RUNNING),
        queued_tasks=count(TaskStatus.PENDING, TaskStatus.WAITING),
        percent_complete=done / len(statuses),
        estimated_time_remaining=12.0,
        live_workers=workers,
        task_breakdown=tasks,
        worker_breakdown={},
    )


MIXED = {
    "schema": TaskStatus.COMPLETE,
    "a-task-with-a-very-long-plan-identifier": TaskStatus.RUNNING,
    "login": TaskStatus.RUNNING,
    "api": TaskStatus.PENDING,
    "tests": TaskStatus.WAITING,
}


@pytest.mark.parametrize("width", [40, 80, 120, 200])
def test_every_line_of_the_panel_fits_the_terminal(width: int) -> None:
    """At any width no line reaches the last column, so a redraw never wraps and adds lines."""
    lines = LiveProgress(io.StringIO(), interactive=True).panel(overall(MIXED), width)
    assert len(lines) == 3  # the summary and the two running tasks
    assert all(len(line) < width for line in lines), lines


def test_the_bar_shrinks_then_goes_and_the_counters_stay() -> None:
    """At 80 columns the summary keeps its bar; at 40 only the counters are left."""
    wide, narrow = progress_line(overall(MIXED), 200), progress_line(overall(MIXED), 40)
    assert wide.startswith("[")
    assert "1/5 finished, 2 running, 2 queued  ETA" in wide
    assert "ETA 12s  workers 3" in wide
    assert progress_line(overall(MIXED), 80).startswith("[")
    assert narrow.startswith(" 40%")


def test_a_hundred_percent_is_every_task_finished() -> None:
    """The counters agree with the bar: 100 % with failures reads 5/5 finished, 3 failed (it
    read "100 % 2/5 done" before), and a finished run shows no ETA."""
    statuses = dict.fromkeys(("a", "b"), TaskStatus.COMPLETE) | dict.fromkeys(
        ("c", "d", "e"), TaskStatus.FAILED
    )
    line = progress_line(overall(statuses), 120)
    assert "100%  5/5 finished, 0 running, 0 queued, 3 failed" in line
    assert "ETA" not in line


def test_running_task_lines_are_aligned_and_long_ids_cut() -> None:
    """Task lines share one column layout; an id longer than the column is cut with '~'."""
    lines = LiveProgress(io.StringIO(), interactive=True).panel(overall(MIXED), 200)[1:]
    bars = {line.index("[") for line in lines}
    assert len(bars) == 1
    assert any("~" in line.split("[")[0] for line in lines)


def test_redraws_replace_the_panel_in_place() -> None:
    """A second redraw moves the cursor up over the first panel's lines and clears them."""
    out = io.StringIO()
    view = LiveProgress(out, interactive=True, width=80)
    view.update(overall(MIXED))
    view.update(overall(MIXED))
    view.close()
    assert out.getvalue().count("\x1b[3F\x1b[J") == 1


def test_logged_changes_count_finished_tasks() -> None:
    """Without a terminal, each change is one line whose counter is the finished count."""
    out = io.StringIO()
    LiveProgress(out, interactive=False).update(overall(MIXED))
    logged = out.getvalue().splitlines()
    assert logged[0] == "  complete  schema (attempt 1)  [1/5 finished]"
    assert len(logged) == 3  # pending and waiting tasks are not logged


def test_fit_and_terminal_width_of_a_pipe() -> None:
    assert fit("abcdef", 10) == "abcdef"
    assert fit("abcdefghij", 8) == "abcdef~"
    assert terminal_width(io.StringIO()) == 80


def report(summary: dict[str, int], *, ok: bool) -> RunReport:
    return RunReport(
        run_id="r1", name="plan", ok=ok, summary=summary, duration_ms=0, waves=(), tasks=()
    )


def test_a_report_of_a_run_still_going_gives_no_verdict() -> None:
    """A pending run reads "in progress", never "NOT complete in 0.0s"."""
    text = render_report(report({"pending": 1, "waiting": 7}, ok=False))
    assert text.splitlines()[0] == "Run r1 (plan): in progress, 0/8 finished"
    done = render_report(report({"complete": 8}, ok=True))
    assert done.splitlines()[0] == "Run r1 (plan): all tasks complete in 0.0s"
