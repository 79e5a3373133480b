"""Fuzzing what SHIM reads from places it does not control (hypothesis): task hashes and
checkpoints in Redis, plan files, agent CLI output. Each is refused with SHIM's own error or
skipped, never a crash, and nothing unsigned verifies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim_core.contracts import AgentState
from shim_core.errors import CorruptTask
from shim_core.models import Task
from shim_core.serde import TASK_FIELDS, task_from_hash
from shim_core.signing import TaskSigner
from shim_core.supervisor.plan import Plan, PlanError, parse_plan
from shim_plugins.agents.plugin import shim_agent_adapters
from shim_plugins.checkpoints.redis_backend import decode

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: JSON values, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: What a stored string field may hold: anything, or JSON of anything.
stored_text = st.text(max_size=40) | json_values.map(json.dumps)
field_names = st.sampled_from(sorted(TASK_FIELDS)) | st.text(max_size=10)


@FUZZ
@given(st.dictionaries(field_names, stored_text, max_size=12))
def test_a_task_hash_decodes_or_is_refused_as_corrupt(fields: dict[str, str]) -> None:
    task: Task | None = None
    try:
        task = task_from_hash(fields, "fuzz")
    except CorruptTask as exc:
        refused = str(exc)
    if task is None:
        assert refused.startswith("corrupt task data: ")
    else:
        assert not TaskSigner(["k" * 16]).verify(task)  # an unsigned hash never verifies


@FUZZ
@given(stored_text)
def test_a_stored_checkpoint_decodes_or_is_skipped(raw: str) -> None:
    decode(raw, "fuzz")  # None (logged) for anything that is not a checkpoint


plan_tasks = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "title", "type", "depends_on", "executor", "params", "priority"])
        | st.text(max_size=6),
        json_values,
        max_size=6,
    ),
    max_size=5,
)


@FUZZ
@given(
    st.one_of(
        json_values, st.fixed_dictionaries({"tasks": plan_tasks}, optional={"name": json_values})
    )
)
def test_plan_data_becomes_a_plan_or_a_plan_error(data: Any) -> None:
    try:
        plan: Plan | None = parse_plan(data, "fuzz.yaml")
    except PlanError as exc:
        plan, problems = None, exc.problems
    assert plan is not None or problems


agent_lines = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | st.dictionaries(
        st.sampled_from(
            ["type", "subtype", "result", "session_id", "message", "item", "msg", "usage"]
        ),
        json_values,
        max_size=5,
    ).map(json.dumps)
)


@pytest.mark.parametrize("adapter", shim_agent_adapters(), ids=lambda a: a.name)
def test_agent_cli_output_never_breaks_an_adapter(adapter: Any) -> None:
    @FUZZ
    @given(st.lists(agent_lines, max_size=8), st.integers(min_value=-9, max_value=255))
    def feed_all(lines: list[str], exit_code: int) -> None:
        state = AgentState()
        for line in lines:
            adapter.feed(line, state)
        adapter.finish(exit_code, state)

    feed_all()
