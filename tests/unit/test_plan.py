"""Plan files: every key and alias, defaults, and each refusal named by file, task and problem."""

import json
from pathlib import Path

import pytest

from shim_core import Priority, ValidationError
from shim_core.supervisor import (
    ON_FAILURE,
    Plan,
    PlanError,
    PlanTask,
    load_plan,
    parse_plan,
    validate_plan,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "auth_system.yaml"
ALLOWED_TASK_KEYS = (
    "id, title, type, executor, params, description, priority, deps, dependencies, "
    "max_attempts, timeout, files, estimate, acceptance, workdir"
)


def write(tmp_path, text, name="plan.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(data, source="p.yaml"):
    with pytest.raises(PlanError) as info:
        parse_plan(data, source)
    return info.value.problems


def test_auth_example_loads_with_defaults_and_overrides():
    """The auth example has 8 tasks on the sim executor; task keys override the defaults."""
    plan = load_plan(EXAMPLE)
    assert plan.name == "auth-system"
    assert plan.source == str(EXAMPLE)
    assert len(plan.tasks) == 8
    assert {t.executor for t in plan.tasks} == {"sim"}
    assert {t.max_attempts for t in plan.tasks} == {3}
    assert plan.task("login").params == {"duration": 0.5, "progress_steps": 4}
    assert plan.task("service").params == {"duration": 1.0, "progress_steps": 5}
    assert plan.task("schema").priority is Priority.HIGH
    assert plan.task("test-api").deps == ("login", "register")
    assert {t.type for t in plan.tasks} == {"code", "test"}


def test_every_task_key_is_parsed():
    """Each task key lands in its PlanTask field with the right type."""
    raw = {
        "id": "t1",
        "title": "Title",
        "type": "research",
        "executor": "shell",
        "params": {"cmd": "true"},
        "description": "Long text",
        "priority": "critical",
        "deps": ["t0"],
        "max_attempts": 2,
        "timeout": 5,
        "files": ["a.py", "b.py"],
        "estimate": 0,
    }
    plan = parse_plan({"name": "n", "tasks": [{"id": "t0"}, raw]}, "p.yaml")
    assert plan.task("t1") == PlanTask(
        id="t1",
        title="Title",
        type="research",
        executor="shell",
        params={"cmd": "true"},
        description="Long text",
        priority=Priority.CRITICAL,
        deps=("t0",),
        max_attempts=2,
        timeout=5.0,
        files=("a.py", "b.py"),
        estimate=0.0,
    )


def test_workdir_is_made_absolute_and_refused_for_agent_tasks(tmp_path, monkeypatch):
    """A task's ``workdir`` is relative to the plan file (to the current directory for a
    request); agent tasks work in the run's repository and may not set one."""
    monkeypatch.chdir(tmp_path)
    plan_file = tmp_path / "plans" / "p.yaml"
    tasks = [
        {"id": "rel", "executor": "shell", "workdir": "out"},
        {"id": "abs", "executor": "shell", "workdir": "/srv/data"},
    ]
    plan = parse_plan({"tasks": tasks}, str(plan_file))
    assert plan.task("rel").workdir == str(tmp_path / "plans" / "out")
    assert plan.task("abs").workdir == "/srv/data"
    request = parse_plan({"tasks": tasks[:1]}, "request")
    assert request.task("rel").workdir == str(tmp_path / "out")
    assert problems_of({"tasks": [{"id": "a", "executor": "agent", "workdir": "x"}]}) == [
        "p.yaml: task 'a': 'workdir' is not for agent tasks: they work in the run's repository "
        "(see 'repo' and 'workspace')"
    ]
    assert problems_of({"tasks": [{"id": "a", "workdir": ""}]}) == [
        "p.yaml: task 'a': 'workdir' must be a non-empty string, got ''"
    ]


def test_omitted_keys_take_plan_task_defaults():
    """A task with only an id gets the documented defaults, and the plan on_failure default."""
    plan = parse_plan({"tasks": [{"id": "a"}]}, "dir/my-plan.yaml")
    assert plan.task("a") == PlanTask(id="a")
    assert plan.on_failure == "cancel-dependents"
    assert plan.name == "my-plan"  # the file stem when the plan has no name


def test_dependencies_alias_and_single_string():
    """``dependencies`` is an alias of ``deps``; a single string is one dependency."""
    plan = parse_plan(
        {"tasks": [{"id": "a"}, {"id": "b", "dependencies": ["a"]}, {"id": "c", "deps": "b"}]},
        "p.yaml",
    )
    assert plan.task("b").deps == ("a",)
    assert plan.task("c").deps == ("b",)


def test_integer_ids_and_repeated_deps_are_normalised():
    """``id: 1`` becomes "1", integer deps become strings, and a repeated dep counts once."""
    plan = parse_plan({"tasks": [{"id": 1}, {"id": 2, "deps": [1, "1"]}]}, "p.yaml")
    assert [t.id for t in plan.tasks] == ["1", "2"]
    assert plan.task("2").deps == ("1",)


def test_defaults_apply_unless_the_task_sets_the_key():
    """Defaults fill unset keys; a task's own value (even through the alias) replaces them,
    except params, which merge key by key (the task's win)."""
    data = {
        "defaults": {"executor": "sim", "priority": "LOW", "params": {"duration": 1}, "deps": "a"},
        "tasks": [
            {"id": "a", "deps": []},
            {"id": "b", "params": {"x": 1}},
            {"id": "c", "dependencies": ["b"], "priority": "high"},
        ],
    }
    plan = parse_plan(data, "p.yaml")
    assert plan.task("a").deps == ()
    assert plan.task("b").params == {"duration": 1, "x": 1}  # merged
    assert plan.task("a").params == {"duration": 1}
    assert plan.task("b").deps == ("a",)
    assert plan.task("b").priority is Priority.LOW
    assert plan.task("c").deps == ("b",)
    assert plan.task("c").priority is Priority.HIGH
    assert {t.executor for t in plan.tasks} == {"sim"}


def test_json_and_yml_files_load(tmp_path):
    """A .json plan and a .yml plan load like a .yaml one."""
    data = {"name": "j", "on_failure": "continue", "tasks": [{"id": "a"}, {"id": "b", "deps": "a"}]}
    json_plan = load_plan(write(tmp_path, json.dumps(data), "plan.json"))
    yml_plan = load_plan(write(tmp_path, "name: j\ntasks:\n  - id: a\n", "plan.yml"))
    assert json_plan.on_failure == "continue"
    assert json_plan.task("b").deps == ("a",)
    assert yml_plan.name == "j"


def test_task_lookup_raises_key_error_for_unknown_id():
    """Plan.task finds a task by id and raises KeyError for an unknown one."""
    plan = Plan(name="p", tasks=(PlanTask(id="a"),))
    assert plan.task("a").id == "a"
    with pytest.raises(KeyError):
        plan.task("b")


def test_plan_error_is_a_validation_error_with_one_line_per_problem():
    """PlanError belongs to the ValidationError tree and its text lists every problem."""
    error = PlanError(["f: one", "f: two"])
    assert isinstance(error, ValidationError)
    assert str(error) == "f: one\nf: two"
    assert error.problems == ["f: one", "f: two"]


def test_unknown_task_key_names_file_task_key_and_allowed_keys(tmp_path):
    """A misspelt task key is refused with the file, the task, the key and the allowed keys."""
    path = write(tmp_path, "tasks:\n  - id: login\n    dep: [x]\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.problems == [
        f"{path}: task 'login': unknown key 'dep' (allowed: {ALLOWED_TASK_KEYS}); "
        "did you mean 'deps'?"
    ]


def test_unknown_top_level_key_is_refused():
    """An unknown top-level key is named together with the allowed ones."""
    problems = problems_of({"nmae": "x", "tasks": [{"id": "a"}]})
    assert problems == [
        "p.yaml: unknown key 'nmae' (allowed: name, defaults, on_failure, tasks, repo, workspace, "
        "budget_usd, prompt_template, on_conflict); "
        "did you mean 'name'?"
    ]


def test_all_problems_are_reported_at_once():
    """Several problems in different tasks come back together, one line each, in file order."""
    problems = problems_of(
        {
            "tasks": [
                {"id": "a", "priority": "urgent"},
                {"id": "b", "deps": ["zz"]},
                {"title": "no id"},
            ]
        }
    )
    assert problems == [
        "p.yaml: task 'a': bad priority 'urgent' (allowed: critical, high, normal, low)",
        "p.yaml: task #3: missing 'id'",
        "p.yaml: task 'b': depends on unknown task 'zz'",
    ]


RULE = "1-64 letters, digits, '_', '.', '-', starting with a letter, digit or '_'"


@pytest.mark.parametrize(
    ("raw_id", "problem"),
    [
        (
            "a b",
            f"p.yaml: task 'a b': invalid id (use {RULE})",
        ),
        (
            "x" * 65,
            f"p.yaml: task '{'x' * 65}': invalid id (use {RULE})",
        ),
        (
            "",
            f"p.yaml: task '': invalid id (use {RULE})",
        ),
        (
            ["a"],
            f"p.yaml: task #1: 'id' must be a string ({RULE}), got ['a']",
        ),
    ],
)
def test_invalid_ids_are_refused(raw_id, problem):
    """Ids with other characters, longer than 64, empty or not a string are refused."""
    assert problems_of({"tasks": [{"id": raw_id}]}) == [problem]


def test_duplicate_ids_name_their_positions():
    """An id used twice is refused once, naming the positions of both tasks."""
    problems = problems_of({"tasks": [{"id": "a"}, {"id": "b"}, {"id": "a"}]})
    assert problems == ["p.yaml: task 'a': duplicate id (tasks #1, #3)"]


def test_task_that_is_not_a_mapping_is_refused():
    """A list entry that is not a mapping is refused by position."""
    problems = problems_of({"tasks": [{"id": "a"}, "b"]})
    assert problems == ["p.yaml: task #2: must be a mapping, got a string"]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("title", 5, "'title' must be a string, got 5"),
        ("description", ["x"], "'description' must be a string, got ['x']"),
        ("type", "", "'type' must be a non-empty string, got ''"),
        ("executor", 7, "'executor' must be a non-empty string, got 7"),
        ("params", [1], "'params' must be a mapping with string keys, got [1]"),
        ("params", {1: "x"}, "'params' must be a mapping with string keys, got {1: 'x'}"),
        ("priority", 1, "bad priority 1 (allowed: critical, high, normal, low)"),
        ("deps", {"a": 1}, "'deps' must be a task id or a list of task ids, got {'a': 1}"),
        ("deps", [None], "'deps' must be a task id or a list of task ids, got [None]"),
        ("max_attempts", 0, "'max_attempts' must be an integer from 1 to 100, got 0"),
        ("max_attempts", True, "'max_attempts' must be an integer from 1 to 100, got True"),
        ("max_attempts", "3", "'max_attempts' must be an integer from 1 to 100, got '3'"),
        ("max_attempts", 10**6, "'max_attempts' must be an integer from 1 to 100, got 1000000"),
        (
            "timeout",
            0,
            "'timeout' must be a number of seconds > 0 and at most 2,592,000 (30 days), got 0",
        ),
        (
            "timeout",
            "10s",
            "'timeout' must be a number of seconds > 0 and at most 2,592,000 (30 days), got '10s'",
        ),
        (
            "timeout",
            float("inf"),
            "'timeout' must be a number of seconds > 0 and at most 2,592,000 (30 days), got inf",
        ),
        (
            "timeout",
            1.0e30,
            "'timeout' must be a number of seconds > 0 and at most 2,592,000 (30 days), got 1e+30",
        ),
        ("files", "a.py", "'files' must be a list of strings, got 'a.py'"),
        ("files", ["a.py", 3], "'files' must be a list of strings, got ['a.py', 3]"),
        (
            "estimate",
            -1,
            "'estimate' must be a number of seconds >= 0 and at most 2,592,000 (30 days), got -1",
        ),
    ],
)
def test_wrong_value_types_are_refused(key, value, problem):
    """Each task key refuses a value of the wrong type or range, naming the key and the value."""
    assert problems_of({"tasks": [{"id": "t", key: value}]}) == [f"p.yaml: task 't': {problem}"]


def test_deps_and_dependencies_together_are_refused():
    """Giving both the key and its alias is ambiguous and refused."""
    problems = problems_of({"tasks": [{"id": "a"}, {"id": "b", "deps": "a", "dependencies": "a"}]})
    assert problems == ["p.yaml: task 'b': give 'deps' or 'dependencies', not both"]


def test_missing_dependency_is_named():
    """A dependency on an id that is not in the plan is refused with both ids."""
    problems = problems_of({"tasks": [{"id": "login", "deps": ["service"]}]})
    assert problems == ["p.yaml: task 'login': depends on unknown task 'service'"]


def test_cycle_is_named_with_its_path():
    """A dependency cycle is refused and spelt out as ``a -> b -> a``."""
    problems = problems_of({"tasks": [{"id": "a", "deps": "b"}, {"id": "b", "deps": "a"}]})
    assert problems == ["p.yaml: task 'a': dependency cycle a -> b -> a"]


def test_self_dependency_is_a_cycle():
    """A task depending on itself is a cycle of one."""
    assert problems_of({"tasks": [{"id": "a", "deps": "a"}]}) == [
        "p.yaml: task 'a': dependency cycle a -> a"
    ]


def test_independent_cycles_are_all_reported():
    """Two separate cycles give two problems."""
    tasks = [
        {"id": "a", "deps": "b"},
        {"id": "b", "deps": "a"},
        {"id": "c", "deps": "d"},
        {"id": "d", "deps": "c"},
    ]
    assert problems_of({"tasks": tasks}) == [
        "p.yaml: task 'a': dependency cycle a -> b -> a",
        "p.yaml: task 'c': dependency cycle c -> d -> c",
    ]


def test_bad_on_failure_lists_allowed_values():
    """on_failure accepts only the documented policies."""
    problems = problems_of({"on_failure": "retry", "tasks": [{"id": "a"}]})
    assert problems == ["p.yaml: bad on_failure 'retry' (allowed: cancel-dependents, continue)"]
    assert ON_FAILURE == ("cancel-dependents", "continue")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"tasks": []}, "p.yaml: the plan has no tasks"),
        ({"name": "x"}, "p.yaml: missing 'tasks' (a list of task mappings)"),
        ({"tasks": {"a": {}}}, "p.yaml: 'tasks' must be a list of task mappings, got a mapping"),
        (["a"], "p.yaml: a plan must be a mapping with 'tasks', got a list"),
        (None, "p.yaml: a plan must be a mapping with 'tasks', got nothing"),
        ({"name": 3, "tasks": [{"id": "a"}]}, "p.yaml: 'name' must be a string, got 3"),
    ],
)
def test_plan_shape_problems(data, problem):
    """An empty, missing or malformed task list, or a plan that is not a mapping, is refused."""
    assert problems_of(data) == [problem]


def test_default_problems_are_reported_once():
    """A bad default is reported once (not per task), and unknown default keys are named."""
    data = {
        "defaults": {"priority": "urgent", "id": "x"},
        "tasks": [{"id": "a"}, {"id": "b"}],
    }
    problems = problems_of(data)
    assert problems[0].startswith("p.yaml: defaults: unknown key 'id' (allowed: title, type,")
    assert problems[1:] == [
        "p.yaml: defaults: bad priority 'urgent' (allowed: critical, high, normal, low)"
    ]


def test_defaults_that_are_not_a_mapping_are_refused():
    """``defaults`` must be a mapping of task keys."""
    problems = problems_of({"defaults": ["sim"], "tasks": [{"id": "a"}]})
    assert problems == ["p.yaml: defaults: must be a mapping of task keys, got a list"]


def test_yaml_syntax_error_gives_the_line(tmp_path):
    """A YAML syntax error is refused with its line and column."""
    path = write(tmp_path, "name: x\ntasks:\n  - id: a\n   title: b\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: invalid YAML at line 4, column ")


def test_json_syntax_error_gives_the_line(tmp_path):
    """A JSON syntax error is refused with its line and column."""
    path = write(tmp_path, '{\n  "tasks": [\n    {"id": "a",}\n  ]\n}', "plan.json")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.problems == [
        f"{path}: invalid JSON at line 3, column 16: Expecting property name enclosed in double "
        "quotes"
    ]


def test_missing_file_is_refused(tmp_path):
    """A plan file that does not exist is refused with the operating system's reason."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.problems == [f"no such plan file: {path}"]


def test_directory_and_binary_file_are_refused(tmp_path):
    """A directory or a file that is not UTF-8 text is unreadable as a plan."""
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PlanError, match=r"dir\.yaml is a directory, not a plan file"):
        load_plan(folder)
    with pytest.raises(PlanError, match=r"bin\.yaml: cannot read: not UTF-8 text"):
        load_plan(binary)


def test_unsupported_suffix_is_refused(tmp_path):
    """Only .yaml, .yml and .json files are plan files."""
    path = write(tmp_path, "tasks: []", "plan.txt")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.problems == [f"{path}: plan files are .yaml, .yml or .json, not '.txt'"]


def test_validate_plan_checks_types_and_executors_only_when_given():
    """Unknown types and executors are refused when the known ones are given, ignored otherwise."""
    plan = Plan(
        name="p",
        source="p.yaml",
        tasks=(PlanTask(id="a", type="magic", executor="gpu"), PlanTask(id="b")),
    )
    validate_plan(plan)
    with pytest.raises(PlanError) as info:
        validate_plan(plan, executors={"sim", "shell"}, types=("code", "test"))
    assert info.value.problems == [
        "p.yaml: task 'a': unknown type 'magic' (known: code, test)",
        "p.yaml: task 'a': unknown executor 'gpu' (available: shell, sim)",
    ]


def test_validate_plan_checks_hand_built_plans():
    """A Plan built in code is checked for duplicates, ids, emptiness and on_failure too."""
    twice = Plan(name="p", tasks=(PlanTask(id="a"), PlanTask(id="a", deps=("a",))))
    with pytest.raises(PlanError) as info:
        validate_plan(twice)
    assert info.value.problems == [
        "plan: task 'a': duplicate id (tasks #1, #2)",
    ]
    empty = Plan(name="p", tasks=(), on_failure="stop", source="code")
    with pytest.raises(PlanError) as info:
        validate_plan(empty)
    assert info.value.problems == [
        "code: bad on_failure 'stop' (allowed: cancel-dependents, continue)",
        "code: the plan has no tasks",
    ]


def test_priority_may_be_given_as_enum():
    """Data built in Python may pass Priority members directly."""
    plan = parse_plan({"tasks": [{"id": "a", "priority": Priority.LOW}]}, "code")
    assert plan.task("a").priority is Priority.LOW


def test_yaml_reader_error_without_position_is_refused(tmp_path):
    """A YAML error that carries no line (a control character) is still one clear problem."""
    path = write(tmp_path, "name: \x07\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: invalid YAML: unacceptable character #x0007")


@pytest.mark.parametrize("task_id", [".", "..", "a..b", "-x", "x.lock", "x."])
def test_ids_that_cannot_name_a_branch_or_a_folder_are_refused(task_id):
    """A task id becomes a git branch and a folder name: '..' must never reach a path."""
    problems = problems_of({"tasks": [{"id": task_id}]})
    assert any("invalid id" in p for p in problems)
