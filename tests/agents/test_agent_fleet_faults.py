"""Fleets of real agents under faults, offline: Claude Code against a scripted model server,
run by real `shim worker` processes (or `shim run`): a SIGKILLed worker's agent dies with it and
the next worker resumes the same session; a 429 cools the agent down fleet-wide without
spending an attempt; a budget stops a run; a conflict is reported; a missing CLI fails fast; a
silent agent is killed by the idle timeout; the seed's eight-task plan is done by agents."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pytest_shim.models import anthropic
from shim_core import Task, TaskStatus
from shim_core.models import TaskOutcome
from shim_core.supervisor import Supervisor
from tests.agents._support import make_repo, shim_run
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("claude") is None, reason="the claude CLI is not installed"),
    pytest.mark.shim_real_redis,
]


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


def agent_env(server, tmp_path, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **anthropic.claude_env(server.url, str(home)),
        "SHIM_WORKTREES": str(tmp_path / "trees"),
        **extra,
    }


def write_plan(tmp_path, repo, body, **top):
    head = "".join(f"{k}: {v}\n" for k, v in top.items())
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"name: agents\nrepo: {repo}\n{head}defaults:\n  executor: agent\n"
        f"  params: {{agent: claude}}\ntasks:\n{body}"
    )
    return plan


def write(path, content):
    return anthropic.ToolUse("Write", {"file_path": path, "content": content})


def children(pid):
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie nobody reaps in this container is dead too


def test_a_killed_workers_agent_dies_and_the_next_worker_resumes_its_session(
    shim_fleet_factory, shim_connection, shim_settings, tmp_path, repo
):
    """SIGKILL of the worker mid-task: its Claude Code process gets SIGKILL too (parent-death
    signal), the task is reaped, and the other worker resumes the same session in the same
    worktree with an "interrupted" prompt."""
    script = [anthropic.Hang(60), anthropic.Text("Finished after the interruption.")]
    with anthropic.ScriptedAnthropic(script) as server:
        fleet = shim_fleet_factory(workers=0, heartbeat=0.5, allow=["agent"])
        env = agent_env(server, tmp_path)
        workers = [fleet.add_worker(env=env) for _ in range(2)]
        supervisor = Supervisor(shim_connection, shim_settings)
        plan = write_plan(tmp_path, repo, "  - id: a\n    title: Resumable task\n")
        run = supervisor.submit(supervisor.decompose(str(plan)))
        task_id = run.task_ids[0]
        wait_until(lambda: server.requests, timeout=30)
        # Claude Code keeps the session under HOME/.claude/projects/<cwd>/<session>.jsonl: once
        # it is there, a resume can find it (killed before that, the next attempt starts a fresh
        # session told about the earlier one: test_agent_executor covers that path).
        sessions = tmp_path / "home" / ".claude" / "projects"
        wait_until(lambda: list(sessions.glob("*/*.jsonl")), timeout=30)
        holder = next(w for w in workers if w.id == fleet.queue.get(task_id).worker_id)
        agents = children(holder.pid)
        assert agents, "the agent CLI runs as a child of its worker"
        first_session = fleet.queue.get(task_id)  # checkpointed before the first request
        holder.kill()
        wait_until(lambda: all(gone(pid) for pid in agents), timeout=10)
        supervisor.start()
        report = supervisor.wait(run.run_id, timeout=90)
        supervisor.stop()
        requests = list(server.requests)
    assert report.ok, report.to_dict()
    task = fleet.queue.get(task_id)
    assert task.attempts == 2
    output = task.result.output
    assert output["summary"] == "Finished after the interruption."
    assert "You were interrupted" in json.dumps(requests[-1]["messages"])
    assert "Resumable task" in json.dumps(requests[-1]["messages"])  # same conversation
    assert first_session.status is TaskStatus.RUNNING


def test_a_rate_limit_cools_the_agent_down_fleet_wide_without_spending_an_attempt(
    shim_fleet_factory, shim_queue, tmp_path, repo
):
    """Claude Code gets 429s until it gives up: the task goes back to wait for the cooldown
    with its attempt given back (max_attempts 1 still completes), and a claude task added
    during the cooldown is not started before it ends."""
    throttled = [anthropic.rate_limited(retry_after=0)] * 3
    routes = {
        "Limited task": [*throttled, anthropic.Text("Done after the cooldown.")],
        "Later task": [anthropic.Text("Later done.")],
    }
    with anthropic.ScriptedAnthropic(routes=routes) as server:
        fleet = shim_fleet_factory(workers=0, heartbeat=0.5, allow=["agent"])
        env = agent_env(server, tmp_path, SHIM_RATE_LIMIT_COOLDOWN_MS="2000")
        for _ in range(2):
            fleet.add_worker(env=env)
        supervisor = Supervisor(shim_queue.connection, shim_queue.settings)
        plan = write_plan(
            tmp_path, repo, "  - id: a\n    title: Limited task\n    max_attempts: 1\n"
        )
        run = supervisor.submit(supervisor.decompose(str(plan)))
        wait_until(lambda: "claude" in shim_queue.cooldowns(), timeout=60)
        cooldown_end = shim_queue.cooldowns()["claude"].timestamp()
        later = Task(id="later", title="Later task", executor="agent", params={"agent": "claude"})
        shim_queue.add(later)
        assert "claude" in shim_queue.cooldowns()  # added while the cooldown is still on
        supervisor.start()
        report = supervisor.wait(run.run_id, timeout=90)
        wait_until(lambda: shim_queue.get("later").status is TaskStatus.COMPLETE, timeout=60)
        supervisor.stop()
    assert report.ok, report.to_dict()
    task = shim_queue.get(run.task_ids[0])
    assert task.attempts == 1
    assert task.result.output["summary"] == "Done after the cooldown."
    later_task = shim_queue.get("later")
    assert later_task.claimed_at.timestamp() >= cooldown_end - 0.05
    assert later_task.attempts == 1


def test_a_budget_stops_a_run(tmp_path, repo):
    """Once the agents spent the run's budget, its remaining agent tasks are cancelled with
    "budget exhausted"; the report shows the cost."""
    expensive = anthropic.Text("Spent a lot.", input_tokens=200_000, output_tokens=20_000)
    with anthropic.ScriptedAnthropic([expensive]) as server:
        plan = write_plan(
            tmp_path, repo, "  - id: a\n    title: A\n  - id: b\n    title: B\n", budget_usd=0.01
        )
        code, report, err = shim_run(plan, agent_env(server, tmp_path), tmp_path, "-w", "1")
    assert code == 1, err
    tasks = {t["id"]: t for t in report["tasks"]}
    assert tasks["a"]["status"] == "complete"
    assert tasks["b"]["status"] == "cancelled"
    assert tasks["b"]["result"]["error"].startswith("budget exhausted")
    assert report["cost_usd"] > 0.01


def test_a_merge_conflict_is_reported_and_nothing_is_lost(tmp_path, repo):
    """Two agents write the same file: both tasks complete, the merge stops at the second with
    the file named, both branches are kept, and `shim run` exits 1."""
    routes = {
        "Write x": [anthropic.ToolUse("Write", {"file_path": "same.txt", "content": "x\n"})],
        "Write y": [anthropic.ToolUse("Write", {"file_path": "same.txt", "content": "y\n"})],
    }
    with anthropic.ScriptedAnthropic(routes=routes) as server:
        plan = write_plan(
            tmp_path, repo, "  - id: x\n    title: Write x\n  - id: y\n    title: Write y\n"
        )
        code, report, err = shim_run(plan, agent_env(server, tmp_path), tmp_path)
    assert code == 1, err
    assert report["summary"] == {"complete": 2}
    merge = report["merge"]
    assert len(merge["merged"]) == 1
    assert [c["files"] for c in merge["conflicts"]] == [["same.txt"]]
    for task in ("x", "y"):
        branch = f"shim/{report['run_id']}/{task}"
        assert (
            subprocess.run(
                ["git", "rev-parse", "--verify", branch], cwd=repo, check=False
            ).returncode
            == 0
        )


def test_on_conflict_agent_resolves_the_conflict_and_the_merge_goes_on(tmp_path, repo):
    """With `on_conflict: agent`, the conflict becomes a resolver task: an agent gets the
    merged work with the conflict markers in place, and the merge then completes."""
    routes = {
        "# Your task: Write x\n": [write("same.txt", "x\n")],
        "# Your task: Write y\n": [write("same.txt", "y\n")],
        "# Your task: Resolve the merge conflict of task y\n": [
            anthropic.ToolUse("Write", {"file_path": "same.txt", "content": "x\ny\n"}),
            anthropic.Text("Kept both lines."),
        ],
    }
    with anthropic.ScriptedAnthropic(routes=routes) as server:
        plan = write_plan(
            tmp_path,
            repo,
            "  - id: x\n    title: Write x\n  - id: y\n    title: Write y\n",
            on_conflict="agent",
        )
        code, report, err = shim_run(plan, agent_env(server, tmp_path), tmp_path, "-w", "1")
        resolver_prompt = next(
            anthropic.first_user_text(r) for r in server.requests
            if "Resolve the merge conflict" in anthropic.first_user_text(r)
        )  # fmt: skip
    assert code == 0, err
    assert report["merge"]["conflicts"] == []
    assert report["merge"]["merged"] == ["x", "resolve-y", "y"]
    assert "same.txt" in resolver_prompt
    merged = subprocess.run(
        ["git", "show", f"{report['merge']['branch']}:same.txt"],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert merged.stdout == "x\ny\n"
    resolver = next(t for t in report["tasks"] if t["id"] == "resolve-y")
    assert resolver["status"] == "complete"


def test_a_missing_cli_fails_fast_without_retries(tmp_path, repo):
    """No such binary: failed at once on the first attempt, with the reason."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"name: m\nrepo: {repo}\ntasks:\n  - id: a\n    executor: agent\n    max_attempts: 3\n"
        "    params: {agent: claude, command: no-such-claude}\n"
    )
    code, report, err = shim_run(plan, {}, tmp_path)
    assert code == 1, err
    task = report["tasks"][0]
    assert task["attempts"] == 1
    assert task["result"]["error"] == "agent CLI 'no-such-claude' not found on PATH"
    assert task["result"]["output"]["outcome"] == TaskOutcome.CLI_MISSING.value


def test_a_silent_agent_is_killed_by_the_idle_timeout(tmp_path, repo):
    """The model never answers and the CLI prints nothing: killed after idle_timeout, stalled."""
    with anthropic.ScriptedAnthropic([anthropic.Hang(60)]) as server:
        plan = write_plan(
            tmp_path,
            repo,
            "  - id: a\n    max_attempts: 1\n    params: {agent: claude, idle_timeout: 3}\n",
        )
        code, report, err = shim_run(plan, agent_env(server, tmp_path), tmp_path)
        # From the model's first request (the run's set-up and the CLI's start-up are not
        # part of it): killed long before the 60 s hang would have ended.
        took = time.monotonic() - server.request_times[0]
    assert code == 1, err
    result = report["tasks"][0]["result"]
    assert result["output"]["outcome"] == "stalled"
    assert "no output for 3 s" in result["error"]
    assert took < 30


AUTH = Path(__file__).parents[2] / "examples" / "auth_system.yaml"


def test_the_seed_auth_plan_done_by_agents_in_worktrees_merged_in_order(tmp_path, repo):
    """The eight-task authentication plan, each task a Claude Code session on three workers:
    every dependent's prompt carries its dependencies' summaries, and the branches merge in
    dependency order."""
    import yaml

    seed = yaml.safe_load(AUTH.read_text())
    tasks = seed["tasks"]
    body = ""
    routes = {}
    for t in tasks:
        deps = t.get("deps", [])
        body += f"  - id: {t['id']}\n    title: {t['title']}\n    deps: {json.dumps(deps)}\n"
        routes[f"# Your task: {t['title']}\n"] = [
            anthropic.ToolUse("Write", {"file_path": f"{t['id']}.md", "content": t["title"]}),
            anthropic.Text(f"Summary of {t['id']}."),
        ]
    with anthropic.ScriptedAnthropic(routes=routes) as server:
        plan = write_plan(tmp_path, repo, body)
        code, report, err = shim_run(plan, agent_env(server, tmp_path), tmp_path, "-w", "3")
        requests = list(server.requests)
    assert code == 0, err
    order = report["merge"]["merged"]
    assert sorted(order) == sorted(t["id"] for t in tasks)
    position = {task_id: i for i, task_id in enumerate(order)}
    prompts = {}
    for body_ in requests:
        first = anthropic.first_user_text(body_)
        for t in tasks:
            if f"# Your task: {t['title']}\n" in first:
                prompts[t["id"]] = first
    for t in tasks:
        for dep in t.get("deps", []):
            assert position[dep] < position[t["id"]]
            assert f"Summary of {dep}." in prompts[t["id"]]
