"""The dashboard in a real headless Chromium, against a real Redis and real `shim worker`
processes: a run's progress moves on screen while the fleet works, a SIGKILLed worker shows as
crashed while its task moves to another worker, and the retry and cancel buttons do what they
say. Screenshots are left in test-artifacts/dashboard/."""

from __future__ import annotations

from typing import Any

import pytest

from shim_core import Task, TaskStatus
from tests.dashboard_support import ARTIFACTS, serving, sim_plan, submit
from tests.helpers import wait_until

pytestmark = pytest.mark.shim_real_redis

HOSTILE = '<img src=x onerror="window.pwned=1">'

NODE = "document.querySelector(`[data-id='${a.id}']`)"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_run_progresses_live_while_a_fleet_works(
    page, shim_settings, shim_fleet_factory, tmp_path
):
    """The run page, opened before any worker joins, shows the DAG by waves, then its counts
    move through the run without a reload until every task is complete; a title made of markup
    is shown as text."""
    plan = sim_plan("live", 9, duration=0.6)  # a mid-run window of seconds, not one
    plan["tasks"][0]["title"] = HOSTILE
    record = submit(shim_settings, plan, tmp_path)
    with serving(shim_settings) as dash:
        page.goto(f"{dash.url}#/run/{record.run_id}")
        page.wait_for_selector("#run-summary[data-total='9']")
        assert page.locator("svg.dag .labels text").all_text_contents() == [
            "wave 1 (3)",
            "wave 2 (3)",
            "wave 3 (3)",
        ]
        assert page.text_content("[data-id='t0'] .title") == HOSTILE[:24] + "…"
        shot(page, "run-before")
        shim_fleet_factory(workers=2, heartbeat=0.5)
        done = "+document.querySelector('#run-summary').dataset.complete"
        page.wait_for_function(f"() => {done} > 0 && {done} < 9")  # seen mid-run
        shot(page, "run-midway")
        page.wait_for_function(f"() => {done} === 9", timeout=30_000)
        assert page.evaluate("() => window.pwned === undefined && document.images.length === 0")
        assert "finished" in page.text_content("#run-summary")
        shot(page, "run-done")


def test_a_killed_worker_shows_as_crashed_and_its_task_moves(
    page, shim_settings, shim_queue, shim_fleet_factory, tmp_path
):
    """SIGKILL the worker running a task: its row turns crashed (greyed) and the task's node
    shows another worker running it."""
    fleet = shim_fleet_factory(workers=2, heartbeat=0.5)
    record = submit(shim_settings, sim_plan("crash", 1, duration=3.0), tmp_path)
    with serving(shim_settings) as dash:
        page.goto(f"{dash.url}#/run/{record.run_id}")
        running = f"{NODE} && {NODE}.dataset.status === 'running' && {NODE}.dataset.worker"
        page.wait_for_function(f"(a) => {running}", arg={"id": "t0"})
        victim_id = page.get_attribute("[data-id='t0']", "data-worker")
        victim = next(w for w in fleet.workers if w.id == victim_id)
        victim.kill()
        page.wait_for_selector(f"tr.gone[data-worker='{victim_id}'][data-status='crashed']")
        moved = f"{running} && {NODE}.dataset.worker !== a.victim"
        page.wait_for_function(f"(a) => {moved}", arg={"id": "t0", "victim": victim_id})
        shot(page, "worker-crashed")
    shim_queue.cancel(record.task_ids[0])  # the fleet stops without waiting for it


def test_the_retry_button_requeues_a_failed_task(page, shim_settings, shim_queue):
    """On a failed task's page, Retry puts the task back in the queue, and the page says so."""
    shim_queue.add(Task(id="flaky", title="Flaky step", type="manual", max_attempts=1))
    (claim,) = shim_queue.claim(["manual"], worker_id="tester")
    shim_queue.fail("flaky", claim.token, "exploded")
    with serving(shim_settings) as dash:
        page.goto(f"{dash.url}#/task/flaky")
        page.wait_for_selector("text=exploded")
        page.click("#retry-task:not([disabled])")
        page.wait_for_selector(".facts .badge.s-pending")
        page.wait_for_selector(".history >> text=released")  # from the stream, not a poll
        shot(page, "task-retried")
    assert shim_queue.get("flaky").status is TaskStatus.PENDING


def test_the_cancel_button_cancels_a_run(page, shim_settings, shim_queue, tmp_path):
    """On the runs page, Cancel (once confirmed) cancels every unfinished task of the run."""
    record = submit(shim_settings, sim_plan("doomed", 3, duration=30.0), tmp_path)
    with serving(shim_settings) as dash:
        page.goto(dash.url)
        row = f"tr[data-run='{record.run_id}']"
        page.wait_for_selector(row)
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f"{row} .cancel-run")
        page.wait_for_selector(f"{row} >> text=3 cancelled")
        assert "3/3 finished" in page.text_content(row)  # failed and cancelled ones count
        shot(page, "run-cancelled")
    wait_until(
        lambda: {t.status for t in shim_queue.get_many(record.task_ids)} == {TaskStatus.CANCELLED}
    )


def test_the_pages_run_under_their_own_content_security_policy(browser, shim_settings, tmp_path):
    """With the policy enforced (the other tests bypass it for their waits), a run's page and
    a task's page draw, and the browser refuses nothing of theirs."""
    record = submit(shim_settings, sim_plan("strict", 2), tmp_path)
    context = browser.new_context()
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) =>"
        " console.error('refused by the policy: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    refused: list[str] = []
    tab.on("console", lambda message: message.type == "error" and refused.append(message.text))
    tab.on("pageerror", lambda exc: refused.append(str(exc)))
    try:
        with serving(shim_settings) as dash:
            tab.goto(f"{dash.url}#/run/{record.run_id}")
            tab.wait_for_selector("#run-summary[data-total='2'] .progress")
            tab.click("[data-id='t1']")
            tab.wait_for_selector("#task-title >> text=step 1")
    finally:
        context.close()
    assert not refused
