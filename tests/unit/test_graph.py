"""Waves, critical path, parallelization factor and makespan of plans."""

import json
from pathlib import Path

import pytest

from shim_core.supervisor import (
    DecompositionPlan,
    Plan,
    PlanTask,
    build_waves,
    critical_path,
    load_plan,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "auth_system.yaml"


def make_plan(*specs):
    """A plan from ``(id, estimate, deps)`` triples."""
    tasks = tuple(PlanTask(id=i, estimate=e, deps=tuple(d)) for i, e, d in specs)
    return Plan(name="g", tasks=tasks)


def analysed(*specs):
    plan = make_plan(*specs)
    return DecompositionPlan.build(plan, {t.id: t.estimate for t in plan.tasks}, "req")


def test_auth_example_waves():
    """The auth example comes out in its five documented waves."""
    assert build_waves(load_plan(EXAMPLE)) == (
        ("schema",),
        ("model",),
        ("service", "test-model"),
        ("login", "register", "test-service"),
        ("test-api",),
    )


def test_auth_example_critical_path_and_factor():
    """The auth example's critical path runs through register (the slower endpoint)."""
    plan = load_plan(EXAMPLE)
    estimates = {t.id: t.params["duration"] for t in plan.tasks}
    result = DecompositionPlan.build(plan, estimates)
    assert result.critical_path == ("schema", "model", "service", "register", "test-api")
    assert result.estimated_total_duration == pytest.approx(3.6)
    assert result.serial_duration == pytest.approx(4.8)
    assert result.parallelization_factor == pytest.approx(4.8 / 3.6)
    assert result.makespan(1) == pytest.approx(4.8)
    assert result.makespan(2) == pytest.approx(3.6)


def test_diamond_waves():
    """Two tasks after one root share a wave; the join comes after both."""
    plan = make_plan(("a", 1, ""), ("b", 1, "a"), ("c", 1, "a"), ("d", 1, "bc"))
    assert build_waves(plan) == (("a",), ("b", "c"), ("d",))


def test_wave_is_the_longest_path_level():
    """A task with a dependency in wave 1 and another in wave 2 goes to wave 3."""
    plan = make_plan(("a", 1, ""), ("b", 1, "a"), ("c", 1, "ab"))
    assert build_waves(plan) == (("a",), ("b",), ("c",))


def test_ids_in_a_wave_keep_plan_order():
    """Inside a wave the ids follow the plan, even when dependencies are listed later."""
    plan = make_plan(("z", 1, "y"), ("x", 1, ""), ("y", 1, ""), ("w", 1, "y"))
    assert build_waves(plan) == (("x", "y"), ("z", "w"))


def test_dependencies_outside_the_plan_are_ignored():
    """A dependency naming no task of the plan does not shift a task to a later wave."""
    plan = make_plan(("a", 1, ""), ("b", 1, ["elsewhere"]))
    assert build_waves(plan) == (("a", "b"),)


def test_empty_plan_has_no_waves_and_no_path():
    """An empty plan has no waves, an empty critical path and a factor of 1."""
    plan = Plan(name="e", tasks=())
    assert build_waves(plan) == ()
    assert critical_path(plan, {}) == ((), 0.0)
    result = DecompositionPlan.build(plan, {})
    assert result.parallelization_factor == 1.0
    assert result.makespan(3) == 0.0


def test_critical_path_numbers():
    """The critical path is the chain with the largest total estimate; the factor follows."""
    result = analysed(("a", 2, ""), ("b", 5, "a"), ("c", 1, "a"), ("d", 3, "bc"))
    assert result.critical_path == ("a", "b", "d")
    assert result.estimated_total_duration == 10.0
    assert result.serial_duration == 11.0
    assert result.parallelization_factor == pytest.approx(1.1)


def test_critical_path_ties_go_to_plan_order():
    """Between equally long chains the earlier task in plan order wins."""
    path, length = critical_path(
        make_plan(("a", 1, ""), ("b", 1, ""), ("c", 2, "ab")), {"a": 1, "b": 1, "c": 2}
    )
    assert (path, length) == (("a", "c"), 3.0)


def test_zero_estimates_give_factor_one():
    """With every estimate 0 the factor is 1.0 rather than a division by zero."""
    result = analysed(("a", 0, ""), ("b", 0, "a"))
    assert (result.estimated_total_duration, result.parallelization_factor) == (0.0, 1.0)


def test_makespan_of_independent_tasks():
    """One worker takes the serial time, two share the load, many take the longest task."""
    result = analysed(("a", 4, ""), ("b", 3, ""), ("c", 3, ""), ("d", 2, ""))
    assert result.makespan(1) == 12.0
    assert result.makespan(2) == 6.0
    assert result.makespan(100) == 4.0


def test_makespan_starts_longest_remaining_path_first():
    """A root heading a long chain starts before roots listed earlier with short tails."""
    result = analysed(("y", 2, ""), ("z", 2, ""), ("x", 2, ""), ("w", 4, "x"))
    # plan order would run y, z first and finish at 8; longest path first finishes at 6
    assert result.makespan(2) == 6.0
    assert result.makespan(1) == 10.0
    assert result.makespan(10) == result.estimated_total_duration == 6.0


def test_makespan_refuses_fewer_than_one_worker():
    """Zero workers never finish, so the question is refused."""
    with pytest.raises(ValueError, match="workers must be >= 1"):
        analysed(("a", 1, "")).makespan(0)


def test_to_dict_is_json_and_complete():
    """to_dict carries the plan, its tasks and every figure, and survives json.dumps."""
    result = analysed(("a", 2, ""), ("b", 3, "a"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data == {
        "name": "g",
        "request": "req",
        "on_failure": "cancel-dependents",
        "tasks": [
            {
                "id": "a",
                "title": "",
                "type": "code",
                "executor": None,
                "priority": "normal",
                "deps": [],
                "estimate": 2.0,
            },
            {
                "id": "b",
                "title": "",
                "type": "code",
                "executor": None,
                "priority": "normal",
                "deps": ["a"],
                "estimate": 3.0,
            },
        ],
        "waves": [["a"], ["b"]],
        "estimates": {"a": 2.0, "b": 3.0},
        "serial_duration": 5.0,
        "estimated_total_duration": 5.0,
        "parallelization_factor": 1.0,
        "critical_path": ["a", "b"],
    }
