"""The fast paths of reading and checking a plan give exactly what the slow ones gave: the YAML
reader (values and errors of ``yaml.load``), the dependency orders (the depth-first search's
order, cycles and duplicates), and a plan checked once (not again, unless it changed)."""

import datetime
import math

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shim_core import dag
from shim_core.errors import DependencyCycle, DuplicateTask
from shim_core.models import Task
from shim_core.supervisor import Plan, PlanError, PlanTask, parse_plan, validate_plan
from shim_core.supervisor import _yaml as fast_yaml
from shim_core.supervisor.graph import dependency_order


def loaded(text):
    """``("ok", value)`` or ``("error", type, message)`` of ``yaml.load`` with the plan loader."""
    try:
        return ("ok", yaml.load(text, Loader=fast_yaml.LOADER))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def read(text):
    try:
        return ("ok", fast_yaml.read_yaml(text))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def same(a, b):
    """Equal, with NaN equal to itself and bool / int / float told apart."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


YAML_CASES = [
    "",
    "a",
    "name: x\ntasks:\n  - id: a\n    deps: [b, c]\n  - {id: b, title: 'B'}\n",
    "- 1\n- -2\n- 0o17\n- 017\n- 0x1f\n- 0b101\n- 1_000\n- 1:30\n- +12\n",
    "- 1.5\n- 1e3\n- .inf\n- -.Inf\n- .nan\n- 6.8523015e+5\n- 190:20:30.15\n",
    "- yes\n- No\n- on\n- OFF\n- true\n- False\n- y\n- n\n",
    "- ~\n- null\n- Null\n-\n- ''\n- \"\"\n",
    "- 2024-01-02\n- 2024-01-02 10:00:00\n- 2001-12-14t21:59:43.10-05:00\n",
    "- '1'\n- \"yes\"\n- |\n  block\n  text\n- >\n  folded\n  text\n- 'it''s'\n",
    "a: 1\na: 2\nb: [1, 2]\nb: x\n",
    "1: a\n2.5: b\nnull: c\ntrue: d\n~: e\n2024-01-01: f\n",
    "a: &x 1\nb: *x\n",
    "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
    "d:\n  <<: {x: 1}\n  y: 2\n",
    "=: 1\n",
    "a: =\n",
    "- <<\n",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "a: !!str 1\nb: !!int '3'\n",
    "- !foo bar\n",
    "a: !!binary aGVsbG8=\n",
    "--- 1\n--- 2\n",
    "--- 1\n...\n",
    "%YAML 1.1\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n",
    "a: [1, {b: c}, [d, [e]]]\n",
    "a: 2024-13-45\n",
    "a: b: c\n",
    "a:\n- 1\n - 2\n",
    "x: '\n",
    "a: [1, 2\n",
    "\t- tab\n",
    "a: 1\n\x00",
    "# only a comment\n",
    "-\n-\n- a:\n",
    "a: {b: {c: {d: [1, {e: f}]}}}\n",
    "a: \u00e9t\u00e9 \U0001f600\n",
    "id: 0001\nx: 1__0\ny: 0.\nz: -0\n",
]


@pytest.mark.parametrize("text", YAML_CASES)
def test_yaml_reader_gives_what_yaml_load_gives(text):
    """Values, types, key order and errors are those of yaml.load, for every construct plans
    may use (and those they should not)."""
    expected, got = loaded(text), read(text)
    assert same(expected, got), (expected, got)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["yes", "no", "on", "off", "~", "null", "1_0", "0o7", "1:2", "<<", "="]),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.booleans()), inner, max_size=4
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(documents, st.booleans(), st.sampled_from([None, "'", '"']))
def test_yaml_reader_matches_yaml_load_on_dumped_data(data, flow, style):
    """Whatever PyYAML writes, in block or flow style, quoted or not, reads back the same."""
    text = yaml.safe_dump(data, default_flow_style=flow, default_style=style, allow_unicode=True)
    expected, got = loaded(text), read(text)
    assert same(expected, got), (text, expected, got)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab:-[]{}&*!<=,'\"#\n 1.~?|>", max_size=40))
def test_yaml_reader_matches_yaml_load_on_any_text(text):
    """Broken and odd documents too: the same value or the same error."""
    expected, got = loaded(text), read(text)
    assert same(expected, got), (text, expected, got)


# --- dependency orders -------------------------------------------------------------------------


def searched(deps_of):
    """The depth-first search's answer, without the in-order shortcut."""
    try:
        return ("ok", dag._search(deps_of))
    except DependencyCycle as exc:
        return ("cycle", exc.cycle)


def ordered(deps_of):
    try:
        return ("ok", dag.dependency_order(deps_of))
    except DependencyCycle as exc:
        return ("cycle", exc.cycle)


graphs = st.integers(1, 12).flatmap(
    lambda n: st.lists(
        st.lists(st.sampled_from([*(f"t{i}" for i in range(n)), "outside"]), max_size=3),
        min_size=n,
        max_size=n,
    ).map(lambda deps: {f"t{i}": tuple(d) for i, d in enumerate(deps)})
)


@settings(max_examples=300, deadline=None)
@given(graphs, st.randoms(use_true_random=False))
def test_dependency_order_is_the_search_order(deps_of, rng):
    """In dependency order or not, cyclic or not: the order (or the cycle named) is the
    search's, and topological_order agrees on the same tasks."""
    for graph in (deps_of, dict(sorted(deps_of.items(), key=lambda _: rng.random()))):
        assert ordered(graph) == searched(graph)
        tasks = [Task(id=task_id, dependencies=deps) for task_id, deps in graph.items()]
        try:
            result = ("ok", [t.id for t in dag.topological_order(tasks)])
        except DependencyCycle as exc:
            result = ("cycle", exc.cycle)
        assert result == searched(graph)


def test_tasks_in_dependency_order_come_back_as_they_are():
    """The shortcut: a batch in order is returned in its order, dependencies outside ignored."""
    tasks = [
        Task(id="a", dependencies=("elsewhere",)),
        Task(id="b", dependencies=("a",)),
        Task(id="c", dependencies=("a", "b")),
    ]
    assert dag.topological_order(tasks) == tasks


def test_self_dependency_and_duplicates_are_still_refused():
    with pytest.raises(DependencyCycle) as info:
        dag.topological_order([Task(id="a"), Task(id="b", dependencies=("b",))])
    assert info.value.cycle == ["b", "b"]
    with pytest.raises(DuplicateTask):
        dag.topological_order([Task(id="a"), Task(id="a")])
    with pytest.raises(DuplicateTask):
        dependency_order(Plan(name="p", tasks=(PlanTask(id="a"), PlanTask(id="a"))))


# --- a plan is checked once ---------------------------------------------------------------------


def test_a_parsed_plan_is_not_checked_again(monkeypatch):
    """validate_plan of a plan parse_plan accepted repeats no check (nor the cycle search)."""
    plan = parse_plan({"tasks": [{"id": "a"}, {"id": "b", "deps": ["a"]}]}, "p.yaml")

    def fail(*args):
        raise AssertionError("checked again")

    monkeypatch.setattr("shim_core.supervisor.plan._graph_problems", fail)
    validate_plan(plan)
    with pytest.raises(AssertionError, match="checked again"):
        validate_plan(attrs.evolve(plan, name="changed"))


def test_references_not_checked_yet_are_checked():
    """A plan parsed without executors is refused when validated against them, with the same
    problems a fresh check reports; one checked against them is accepted at once."""
    data = {"tasks": [{"id": "a", "executor": "nope", "type": "odd"}]}
    plan = parse_plan(data, "p.yaml")
    fresh = Plan(name=plan.name, tasks=plan.tasks, source=plan.source)
    for candidate in (plan, fresh):
        with pytest.raises(PlanError) as info:
            validate_plan(candidate, executors=["sim"], types=["code"])
        assert info.value.problems == [
            "p.yaml: task 'a': unknown type 'odd' (known: code)",
            "p.yaml: task 'a': unknown executor 'nope' (available: sim)",
        ]
    checked = parse_plan(data, "p.yaml", executors=["nope"], types=["odd"])
    validate_plan(checked, executors={"nope": object()}, types=("odd",))
    with pytest.raises(PlanError):
        validate_plan(checked, executors=["sim"], types=["odd"])


def test_a_refused_plan_stays_unchecked():
    """A plan that failed a check is checked in full again (and fails the same way)."""
    plan = Plan(name="p", tasks=(PlanTask(id="a", deps=("b",)), PlanTask(id="b", deps=("a",))))
    for _ in range(2):
        with pytest.raises(PlanError) as info:
            validate_plan(plan)
        assert info.value.problems == ["plan: task 'a': dependency cycle a -> b -> a"]


def test_checked_state_is_not_part_of_equality_or_repr():
    plan = parse_plan({"tasks": [{"id": "a"}]}, "p.yaml")
    other = Plan(name=plan.name, tasks=plan.tasks, source=plan.source)
    assert plan == other
    assert repr(plan) == repr(other)


def test_a_plan_holding_lists_is_checked_every_time():
    """Dependencies given as a list could change after a check: such a plan is never taken as
    checked."""
    deps = []
    plan = Plan(name="p", tasks=(PlanTask(id="a"), PlanTask(id="b", deps=deps)))
    validate_plan(plan)
    deps.append("b")
    with pytest.raises(PlanError, match="dependency cycle b -> b"):
        validate_plan(plan)
