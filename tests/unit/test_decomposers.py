"""The task decomposer and the built-in strategies ``plan`` and ``lines``."""

from pathlib import Path

import attrs
import pytest

from shim_core.hookspecs import hookimpl
from shim_core.models import TaskResult
from shim_core.plugins import Plugins
from shim_core.supervisor import (
    DEFAULT_ESTIMATE,
    Plan,
    PlanError,
    PlanTask,
    TaskDecomposer,
    ValidationResult,
)
from shim_plugins.decomposers import plugin as decomposers_plugin
from shim_plugins.decomposers.lines import guess_type

EXAMPLE = Path(__file__).parents[2] / "examples" / "auth_system.yaml"


@attrs.define
class FakeExecutor:
    name: str
    task_types: tuple[str, ...] = ()

    def execute(self, task, ctx):
        return TaskResult(success=True)


class FakeExecutors:
    @hookimpl
    def shim_executors(self):
        return [FakeExecutor("sim"), FakeExecutor("linter", ("lint",))]


@attrs.frozen
class NotAPlanStrategy:
    name: str = "broken"

    def decompose(self, request, context):
        return {"tasks": []}


class BrokenStrategies:
    @hookimpl
    def shim_decomposers(self):
        return [NotAPlanStrategy()]


@pytest.fixture
def decomposer():
    plugins = Plugins(entry_points=False, extra=[decomposers_plugin, FakeExecutors()])
    return TaskDecomposer(plugins)


def lines(decomposer, text, **context):
    return decomposer.decompose(text, "lines", context).plan


def test_builtin_strategies_are_discovered_through_entry_points():
    """Plugins() finds the plan and lines strategies of the installed package."""
    plugins = Plugins(env={"SHIM_LOAD_PLUGINS": "shim-decomposers"})
    assert {"plan", "lines"} <= set(plugins.decomposers)
    assert not plugins.errors


def test_plan_file_is_selected_and_analysed(decomposer):
    """An existing .yaml path selects the plan strategy; sim durations become the estimates."""
    result = decomposer.decompose(str(EXAMPLE))
    assert result.original_request == str(EXAMPLE)
    assert result.plan.name == "auth-system"
    assert result.estimates["service"] == 1.0
    assert result.waves[2] == ("service", "test-model")
    assert result.estimated_total_duration == pytest.approx(3.6)


def test_text_selects_the_lines_strategy(decomposer):
    """Free text, even one mentioning a .json file, goes to the lines strategy."""
    assert decomposer.select_strategy("1. a\n2. b") == "lines"
    assert decomposer.select_strategy("Fix the parser of settings.json") == "lines"
    assert decomposer.select_strategy(str(EXAMPLE)) == "plan"


def test_missing_plan_path_is_reported_not_turned_into_a_task(decomposer, tmp_path):
    """A path-like request to a plan file that does not exist is refused as unreadable."""
    path = tmp_path / "missing.yml"
    with pytest.raises(PlanError, match=r"no such plan file: .*missing\.yml"):
        decomposer.decompose(str(path))


def test_unknown_strategy_lists_the_available_ones(decomposer):
    """Asking for a strategy nobody provides names those that exist."""
    with pytest.raises(PlanError) as info:
        decomposer.decompose("x", "llm")
    assert info.value.problems == ["unknown strategy 'llm' (available: agent, lines, plan)"]


def test_strategy_returning_no_plan_is_refused():
    """A strategy whose result is not a Plan is reported by name."""
    plugins = Plugins(entry_points=False, extra=[BrokenStrategies()])
    with pytest.raises(PlanError, match="strategy 'broken' returned dict, not a Plan"):
        TaskDecomposer(plugins).decompose("x", "broken")


def test_unknown_executor_is_refused_unless_validation_is_off(decomposer):
    """Executors are checked against the plugins unless the context turns that off."""
    with pytest.raises(PlanError) as info:
        decomposer.decompose("do it", context={"executor": "gpu"})
    assert info.value.problems == [
        "request: task '1': unknown executor 'gpu' (available: linter, sim)"
    ]
    plan = decomposer.decompose("do it", context={"executor": "gpu", "validate_executors": False})
    assert plan.plan.task("1").executor == "gpu"


def test_structure_is_checked_even_without_executor_validation(decomposer):
    """Turning executor checks off still refuses a cycle."""
    with pytest.raises(PlanError, match="dependency cycle 1 -> 2 -> 1"):
        decomposer.decompose("1. a after 2\n2. b after 1", context={"validate_executors": False})


def test_types_declared_by_executors_are_known(decomposer):
    """A type an executor declares is accepted; an unknown one is refused with the known list."""
    ok = Plan(name="p", tasks=(PlanTask(id="a", type="lint"),))
    bad = Plan(name="p", source="p.yaml", tasks=(PlanTask(id="a", type="magic"),))
    assert decomposer.validate_plan(ok) == ValidationResult(True, [])
    assert decomposer.validate_plan(bad) == ValidationResult(
        False,
        [
            "p.yaml: task 'a': unknown type 'magic' (known: analyze, code, document, lint, "
            "research, test)"
        ],
    )


def test_decompose_plan_analyses_a_built_plan(decomposer):
    """decompose_plan checks and analyses a Plan built in code."""
    plan = Plan(name="p", tasks=(PlanTask(id="a", estimate=2), PlanTask(id="b", deps=("a",))))
    result = decomposer.decompose_plan(plan, request="code")
    assert result.waves == (("a",), ("b",))
    assert result.estimates == {"a": 2.0, "b": DEFAULT_ESTIMATE}


def test_estimate_sources_in_priority_order():
    """estimate, then sim duration, then the type's history, then the default."""
    decomposer = TaskDecomposer(Plugins(entry_points=False), history={"test": 7.5})
    sim = {"executor": "sim", "params": {"duration": 2}}
    assert decomposer.estimate_duration(PlanTask(id="a", estimate=1, type="test", **sim)) == 1.0
    assert decomposer.estimate_duration(PlanTask(id="a", type="test", **sim)) == 2.0
    assert decomposer.estimate_duration(PlanTask(id="a", type="test")) == 7.5
    assert decomposer.estimate_duration(PlanTask(id="a", type="code")) == DEFAULT_ESTIMATE


def test_duration_counts_only_for_the_sim_executor():
    """A duration param of another executor, or an unusable one, is not an estimate."""
    decomposer = TaskDecomposer(Plugins(entry_points=False))
    shell = PlanTask(id="a", executor="shell", params={"duration": 2})
    odd = PlanTask(id="a", executor="sim", params={"duration": "2"})
    assert decomposer.estimate_duration(shell) == DEFAULT_ESTIMATE
    assert decomposer.estimate_duration(odd) == DEFAULT_ESTIMATE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fix the typo in the README", "simple"),
        ("Add a login endpoint and a logout endpoint", "simple"),
        ("Add login and register endpoints, then write tests", "moderate"),
        ("1. schema\n2. model\n3. service", "moderate"),
        ("- a\n- b\n- c\n- d\n- e\n- f", "complex"),
        (" ".join(["word"] * 250), "complex"),
    ],
)
def test_analyze_complexity(decomposer, text, expected):
    """List items, conjunctions and length raise the complexity score."""
    assert decomposer.analyze_complexity(text) == expected


def test_identify_dependencies_keeps_known_ids_only(decomposer):
    """Declared dependencies are returned per task, without ids outside the sequence."""
    tasks = [PlanTask(id="a"), PlanTask(id="b", deps=("a", "zz"))]
    assert decomposer.identify_dependencies(tasks) == {"a": (), "b": ("a",)}


def test_numbered_list_keeps_item_numbers(decomposer):
    """Items numbered ``1.``, ``2)`` and ``Step 3:`` keep their numbers as ids."""
    plan = lines(decomposer, "1. Design schema\n2) Build model\nStep 3: Build service")
    assert [(t.id, t.title) for t in plan.tasks] == [
        ("1", "Design schema"),
        ("2", "Build model"),
        ("3", "Build service"),
    ]
    assert plan.source == "request"


def test_numbers_are_kept_even_when_not_consecutive(decomposer):
    """Ids are the written numbers (leading zeros dropped), not the positions."""
    plan = lines(decomposer, "10. First\n020. Second after 10")
    assert [t.id for t in plan.tasks] == ["10", "20"]
    assert plan.task("20").deps == ("10",)


def test_bullets_are_numbered_by_position(decomposer):
    """Bulleted items with -, * and • get ids 1, 2, 3 in order."""
    plan = lines(decomposer, "- Alpha\n* Beta after 1\n\u2022 Gamma")
    assert [(t.id, t.title, t.deps) for t in plan.tasks] == [
        ("1", "Alpha", ()),
        ("2", "Beta", ("1",)),
        ("3", "Gamma", ()),
    ]


@pytest.mark.parametrize(
    ("item", "title", "deps"),
    [
        ("Build API after 2", "Build API", ("2",)),
        ("Build API after 1 and 3", "Build API", ("1", "3")),
        ("Build API after 1, 2", "Build API", ("1", "2")),
        ("Build API after steps 1, 2 and 3", "Build API", ("1", "2", "3")),
        ("Build API, depends on 3", "Build API", ("3",)),
        ("Build API (depends on 1, 2) today", "Build API today", ("1", "2")),
        ("Build API once 2 is done.", "Build API", ("2",)),
        ("After 3, build the API", "Build the API", ("3",)),
        ("Retry after 5 minutes", "Retry after 5 minutes", ()),
        ("Wait after 1.5 hours", "Wait after 1.5 hours", ()),
    ],
)
def test_dependency_phrases(decomposer, item, title, deps):
    """Each dependency phrase becomes deps and leaves the title; quantities are not references."""
    text = "1. one\n2. two\n3. three\n4. " + item
    task = lines(decomposer, text).task("4")
    assert (task.title, task.deps) == (title, deps)
    assert task.description == item


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Write tests for the model", "test"),
        ("Testing the parser", "test"),
        ("Update the README", "document"),
        ("Document the API", "document"),
        ("Research OAuth providers", "research"),
        ("Compare two caches", "research"),
        ("Investigate the leak", "research"),
        ("Profile the hot loop", "analyze"),
        ("Audit the permissions", "analyze"),
        ("Analyse the logs", "analyze"),
        ("Implement the service", "code"),
        ("Document how the tests run", "document"),
    ],
)
def test_type_guesses(title, expected):
    """The first telling word decides the type; without one it is code."""
    assert guess_type(title) == expected


def test_list_items_get_guessed_types(decomposer):
    """Each list item's type is guessed from its title."""
    plan = lines(decomposer, "1. Implement model\n2. Write tests after 1\n3. Update docs")
    assert [t.type for t in plan.tasks] == ["code", "test", "document"]


def test_text_without_a_list_is_one_task(decomposer):
    """Text that is not a list becomes task "1", titled by its first line (cut when long)."""
    text = "Refactor the whole storage layer " * 4 + "\nand keep it fast after 2"
    task = lines(decomposer, text).task("1")
    assert task.title.endswith("...")
    assert len(task.title) == 80
    assert task.description == text.strip()
    assert task.deps == ()


def test_reference_to_unknown_item_is_refused(decomposer):
    """An item depending on a number that is not in the list is refused with both numbers."""
    with pytest.raises(PlanError) as info:
        lines(decomposer, "1. a\n2. b after 7")
    assert info.value.problems == ["request: task '2': depends on unknown task '7'"]


@pytest.mark.parametrize("text", ["", "  \n\t"])
def test_empty_request_is_refused(decomposer, text):
    """An empty or blank request has nothing to decompose."""
    with pytest.raises(PlanError) as info:
        lines(decomposer, text)
    assert info.value.problems == ["request: empty request"]


def test_context_sets_executor_and_params(decomposer):
    """The context's executor and params apply to every task; without it executor stays unset."""
    plan = lines(decomposer, "1. a\n2. b", executor="sim", params={"duration": 0.1})
    assert {(t.executor, t.params["duration"]) for t in plan.tasks} == {("sim", 0.1)}
    assert {t.executor for t in lines(decomposer, "1. a\n2. b").tasks} == {None}


def test_preamble_names_plan_and_continuations_join_description(decomposer):
    """Lines before the list name the plan; deeper or plain lines continue the item above."""
    text = "Auth system:\n1. Schema\n   - users table\n   more detail\n2. Model after 1"
    plan = lines(decomposer, text)
    assert plan.name == "Auth system"
    assert plan.task("1").description == "Schema\n- users table\nmore detail"
    assert [t.id for t in plan.tasks] == ["1", "2"]
    assert lines(decomposer, "1. a", name="mine").name == "mine"


def test_lines_plan_waves(decomposer):
    """A list with dependency phrases is decomposed into waves."""
    text = "1. Schema\n2. Model after 1\n3. Docs\n4. Tests after 1 and 2"
    result = decomposer.decompose(text)
    assert result.waves == (("1", "3"), ("2",), ("4",))
    assert result.estimates == dict.fromkeys(("1", "2", "3", "4"), DEFAULT_ESTIMATE)


def test_item_made_only_of_a_dependency_phrase_keeps_its_text(decomposer):
    """An item with nothing but a dependency phrase keeps that text as its title."""
    assert lines(decomposer, "1. a\n2. after 1").task("2").title == "after 1"


def test_supervisor_package_exports_lazily():
    """The package loads Supervisor lazily and raises AttributeError for unknown names."""
    import shim_core.supervisor as package

    assert "Supervisor" in package.__all__
    assert package.Supervisor.__name__ == "Supervisor"  # imported on first use
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = package.Nope
