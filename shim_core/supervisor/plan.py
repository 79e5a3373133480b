"""Plans: a named set of tasks with dependencies, read from a YAML or JSON file and checked.

A plan file::

    name: auth-system
    on_failure: cancel-dependents        # or: continue
    defaults:                            # applied to every task that does not set the key
      executor: sim
    tasks:
      - id: schema
        title: Design the schema
      - id: model
        deps: [schema]                   # alias: dependencies; a single string is accepted

Everything wrong with a plan is reported at once in one :class:`PlanError`, one problem a line,
each naming the file and the task: ``examples/x.yaml: task 'login': unknown key 'dep' (...)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from shim_core.dag import dependency_order
from shim_core.errors import DependencyCycle, ValidationError
from shim_core.models import Priority

if TYPE_CHECKING:
    import yaml

ON_FAILURE = ("cancel-dependents", "continue")
PLAN_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = (
    "name",
    "defaults",
    "on_failure",
    "tasks",
    "repo",
    "workspace",
    "budget_usd",
    "prompt_template",
    "on_conflict",
)
WORKSPACES = ("worktree", "shared")
ON_CONFLICT = ("stop", "agent")
TASK_KEYS = (
    "id",
    "title",
    "type",
    "executor",
    "params",
    "description",
    "priority",
    "deps",
    "dependencies",
    "max_attempts",
    "timeout",
    "files",
    "estimate",
    "acceptance",
    "workdir",
)
DEFAULT_KEYS = TASK_KEYS[1:]  # every task key but the id
MAX_CYCLES = 10  # cycles named in one PlanError; more would repeat the same fix
#: A plan id names a git branch and a folder too: no leading '.' or '-', no '..', no '.lock' end.
_ID = re.compile(r"(?!.*\.\.)(?!.*\.lock$)(?!.*\.$)[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_ID_RULE = "1-64 letters, digits, '_', '.', '-', starting with a letter, digit or '_'"
_PRIORITIES = tuple(p.value for p in Priority)


@attrs.frozen(kw_only=True)
class PlanTask:
    """One task of a plan. ``timeout`` and ``estimate`` are in seconds."""

    id: str
    title: str = ""
    type: str = "code"
    executor: str | None = None
    params: dict[str, Any] = attrs.field(factory=dict)
    description: str = ""
    priority: Priority = Priority.NORMAL
    deps: tuple[str, ...] = ()
    max_attempts: int | None = None
    timeout: float | None = None
    files: tuple[str, ...] = ()
    estimate: float | None = None
    #: What "done" means, one criterion each (agent prompts carry them).
    acceptance: tuple[str, ...] = ()
    #: The directory a shell task runs in (the task's ``context.project_path``), made if
    #: missing and kept after the task; relative to the plan file, or to the current directory
    #: for a request. Without it a task gets a temporary directory that goes with it. Agent tasks
    #: work in the run's repository.
    workdir: str | None = None


@attrs.frozen(kw_only=True)
class Plan:
    """A named set of tasks. ``source`` is the file it came from, or ``"request"`` for text.

    ``repo`` (a path, relative to the plan file, or a git URL; default: the git repository
    holding the current directory) and ``workspace`` (``worktree`` or ``shared``) say where agent
    tasks work; ``budget_usd`` caps what the run's agents may spend; ``prompt_template`` is a
    file that replaces the agent prompt's default template; ``on_conflict: agent`` has an agent
    resolve a merge conflict instead of stopping there."""

    name: str
    tasks: tuple[PlanTask, ...]
    on_failure: str = "cancel-dependents"
    source: str = ""
    repo: str | None = None
    workspace: str | None = None
    budget_usd: float | None = None
    prompt_template: str | None = None
    #: ``stop`` (default): the first merge conflict stops the merge; ``agent``: an agent task is
    #: added to resolve it, then the merge goes on.
    on_conflict: str | None = None
    #: Set by a check that found nothing wrong (:func:`parse_plan`, :func:`validate_plan`): the
    #: executors and types the references were checked against (None: not checked), so a later
    #: check of the same plan object repeats nothing. Not an ``__init__`` argument: a plan
    #: built or changed with ``attrs.evolve`` starts unchecked.
    _checked: tuple[frozenset[str] | None, frozenset[str] | None] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    def task(self, task_id: str) -> PlanTask:
        """The task with this id; KeyError when the plan has none."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)


class PlanError(ValidationError):
    """A plan was refused. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Bad(Exception):
    """A field value is unusable; the message says why (internal to parsing)."""


def load_plan(
    path: str | Path,
    *,
    executors: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> Plan:
    """Read and check a plan file (``.yaml``, ``.yml`` or ``.json``); raises PlanError with every
    problem, including unknown executors and types when those are given."""
    source = str(path)
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        raise PlanError([f"{source} is a directory, not a plan file (.yaml, .yml or .json)"])
    if not Path(path).exists():
        near = [str(Path(f"{source}{s}")) for s in PLAN_SUFFIXES if Path(f"{source}{s}").is_file()]
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise PlanError([f"no such plan file: {source}{hint}"])
    if suffix not in PLAN_SUFFIXES:
        shown = repr(suffix) if suffix else "without a suffix"
        raise PlanError([f"{source}: plan files are .yaml, .yml or .json, not {shown}"])
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise PlanError([f"{source}: cannot read: not UTF-8 text ({exc.reason})"]) from exc
    return parse_plan(_decode(text, suffix, source), source, executors=executors, types=types)


def _decode(text: str, suffix: str, source: str) -> Any:
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise PlanError([f"{source}: invalid JSON at {where}: {exc.msg}"]) from exc
    import yaml  # here: a process that never reads a YAML plan (a worker) does not load PyYAML

    from shim_core.supervisor._yaml import read_yaml

    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        raise PlanError([f"{source}: invalid YAML{_yaml_where(exc)}"]) from exc


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def parse_plan(
    data: Any,
    source: str,
    *,
    executors: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> Plan:
    """Build a plan from parsed YAML/JSON data; raises PlanError listing every problem
    (unknown executors and types too, when ``executors`` / ``types`` are given)."""
    where = source or "plan"
    if not isinstance(data, Mapping):
        raise PlanError([f"{where}: a plan must be a mapping with 'tasks', got {_kind(data)}"])
    problems: list[str] = []
    _check_keys(data, TOP_KEYS, where, problems)
    name = _field(where, problems, _text, "name", data.get("name", Path(source).stem or "plan"))
    on_failure = _field(where, problems, _text, "on_failure", data.get("on_failure", ON_FAILURE[0]))
    defaults = _parse_defaults(data.get("defaults"), where, problems)
    tasks = [
        _with_workdir(task, source, where, problems)
        for task in _parse_tasks(data.get("tasks"), defaults, where, problems)
    ]
    extra = {
        key: _field(where, problems, parse, key, data[key])
        for key, parse in _RUN_FIELDS.items()
        if data.get(key) is not None
    }
    plan = Plan(
        name=name or "plan",
        tasks=tuple(tasks),
        on_failure=ON_FAILURE[0] if on_failure is None else on_failure,
        source=source,
        **{key: _relative(key, value, source) for key, value in extra.items()},
    )
    problems += _on_failure_problems(plan) + _graph_problems(plan)
    problems += _reference_problems(plan, executors, types)
    if problems:
        raise PlanError(problems)
    _mark_checked(plan, executors, types)
    return plan


def validate_plan(
    plan: Plan,
    *,
    executors: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> None:
    """Check a plan's ids, dependencies, cycles and on_failure, and (when given) that every
    task's type is in ``types`` and executor in ``executors``; raises PlanError.

    A plan object that already passed a check (:func:`parse_plan` or this function; the
    fields checked cannot change) is not checked again, but for references to executors or
    types it was not checked against."""
    checked = plan._checked
    if checked is not None:  # the structure is known to be good; the references perhaps
        wanted = (_names(executors), _names(types))
        if all(want is None or want == had for want, had in zip(wanted, checked, strict=True)):
            return
        problems = _reference_problems(plan, executors, types)
    else:
        where = plan.source or "plan"
        problems = _on_failure_problems(plan)
        if not plan.tasks:
            problems.append(f"{where}: the plan has no tasks")
        problems += _graph_problems(plan)
        problems += _reference_problems(plan, executors, types)
    if problems:
        raise PlanError(problems)
    _mark_checked(plan, executors, types)


def _names(names: Collection[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(names)


def _mark_checked(
    plan: Plan, executors: Collection[str] | None, types: Collection[str] | None
) -> None:
    """Record that ``plan`` passed every check (references against these names); not for a
    hand-built plan holding lists, which could change after the check."""
    if type(plan.tasks) is tuple and all(type(task.deps) is tuple for task in plan.tasks):
        object.__setattr__(plan, "_checked", (_names(executors), _names(types)))


def _reference_problems(
    plan: Plan, executors: Collection[str] | None, types: Collection[str] | None
) -> list[str]:
    """Tasks naming a type or executor that is not available."""
    where = plan.source or "plan"
    problems: list[str] = []
    for task in plan.tasks:
        label = f"{where}: task {task.id!r}"
        if types is not None and task.type not in types:
            problems.append(f"{label}: unknown type {task.type!r} (known: {_listed(types)})")
        if executors is not None and task.executor is not None and task.executor not in executors:
            available = _listed(executors) or "none"
            problems.append(f"{label}: unknown executor {task.executor!r} (available: {available})")
    return problems


# --- reading the mapping ---------------------------------------------------------------------


def _parse_defaults(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """The ``defaults`` mapping with aliases resolved and bad values reported once (and dropped)."""
    if raw is None:
        return {}
    label = f"{where}: defaults"
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: must be a mapping of task keys, got {_kind(raw)}")
        return {}
    _check_keys(raw, DEFAULT_KEYS, label, problems)
    merged = _resolve_alias(raw, label, problems)
    good: dict[str, Any] = {}
    for key, value in merged.items():
        if key in _FIELDS and _field(label, problems, _FIELDS[key], key, value) is not None:
            good[key] = value
    return good


def _parse_tasks(
    raw: Any, defaults: Mapping[str, Any], where: str, problems: list[str]
) -> list[PlanTask]:
    """The tasks that could be built (those without a usable id are reported and left out)."""
    if raw is None:
        problems.append(f"{where}: missing 'tasks' (a list of task mappings)")
        return []
    if not isinstance(raw, list):
        problems.append(f"{where}: 'tasks' must be a list of task mappings, got {_kind(raw)}")
        return []
    if not raw:
        problems.append(f"{where}: the plan has no tasks")
    tasks = [_parse_task(i, item, defaults, where, problems) for i, item in enumerate(raw, 1)]
    return [task for task in tasks if task is not None]


def _parse_task(
    position: int, raw: Any, defaults: Mapping[str, Any], where: str, problems: list[str]
) -> PlanTask | None:
    """One task mapping merged over the defaults; None when it has no usable id."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: task #{position}: must be a mapping, got {_kind(raw)}")
        return None
    task_id = raw.get("id")
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)  # `id: 1` in YAML
    label = (
        f"{where}: task {task_id!r}" if isinstance(task_id, str) else f"{where}: task #{position}"
    )
    _check_keys(raw, TASK_KEYS, label, problems)
    if task_id is None:
        problems.append(f"{label}: missing 'id'")
    elif not isinstance(task_id, str):
        problems.append(f"{label}: 'id' must be a string ({_ID_RULE}), got {task_id!r}")
    own = _resolve_alias(raw, label, problems)
    merged = {**defaults, **own}
    if isinstance(defaults.get("params"), Mapping) and isinstance(own.get("params"), Mapping):
        # params merge key by key: `defaults: {params: {agent: claude}}` and a task's
        # `params: {max_turns: 5}` give both
        merged["params"] = {**defaults["params"], **own["params"]}
    fields: dict[str, Any] = {}
    for key, parse in _FIELDS.items():
        if key in merged:
            value = _field(label, problems, parse, key, merged[key])
            if value is not None:
                fields[key] = value
    return PlanTask(id=task_id, **fields) if isinstance(task_id, str) else None


def _resolve_alias(raw: Mapping[str, Any], label: str, problems: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``dependencies`` renamed to ``deps`` (and the id dropped)."""
    merged = {key: value for key, value in raw.items() if key != "id"}
    if "dependencies" in merged:
        if "deps" in merged:
            problems.append(f"{label}: give 'deps' or 'dependencies', not both")
        merged["deps"] = merged.pop("dependencies")
    return merged


def _check_keys(
    raw: Mapping[Any, Any], allowed: tuple[str, ...], label: str, problems: list[str]
) -> None:
    for key in raw:
        if key not in allowed:
            import difflib  # only for a mistake: the plugins load this module in every process

            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{label}: unknown key {key!r} (allowed: {', '.join(allowed)}){hint}")


def _field(
    label: str, problems: list[str], parse: Callable[[str, Any], Any], key: str, value: Any
) -> Any:
    """``parse(key, value)``, or None with the problem recorded."""
    try:
        return parse(key, value)
    except _Bad as bad:
        problems.append(f"{label}: {bad}")
        return None


# --- one parser per field: (key, raw value) -> value, or _Bad --------------------------------


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{key!r} must be a string, got {value!r}")
    return value


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _executor(key: str, value: Any) -> str | None:
    return None if value is None else _name(key, value)


def _params(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _Bad(f"{key!r} must be a mapping with string keys, got {value!r}")
    return dict(value)


def _priority(key: str, value: Any) -> Priority:
    if isinstance(value, Priority):
        return value
    if isinstance(value, str) and value.strip().lower() in _PRIORITIES:
        return Priority(value.strip().lower())
    raise _Bad(f"bad priority {value!r} (allowed: {', '.join(_PRIORITIES)})")


def _ids(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str | int) else value
    if not isinstance(items, list | tuple) or not all(_is_id_like(item) for item in items):
        raise _Bad(f"{key!r} must be a task id or a list of task ids, got {value!r}")
    return tuple(dict.fromkeys(str(item) for item in items))  # de-duplicated, order kept


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{key!r} must be a list of strings, got {value!r}")
    return tuple(value)


#: The longest time a plan may give a task (a timeout or an estimate): 30 days. Larger numbers
#: are mistakes, and beyond about 1e9 s a timer overflows.
MAX_SECONDS = 30 * 86_400
#: The most attempts a task may ask for.
MAX_ATTEMPTS = 100


def _attempts(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise _Bad(f"{key!r} must be an integer from 1 to {MAX_ATTEMPTS}, got {value!r}")
    return value


def _seconds(minimum: float, inclusive: bool) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if (
            number is None
            or not math.isfinite(number)
            or not _above(number, minimum, inclusive)
            or number > MAX_SECONDS
        ):
            bound = ">=" if inclusive else ">"
            raise _Bad(
                f"{key!r} must be a number of seconds {bound} {minimum:g} and at most "
                f"{MAX_SECONDS:,} (30 days), got {value!r}"
            )
        return float(number)

    return parse


def _above(value: float, minimum: float, inclusive: bool) -> bool:
    return value >= minimum if inclusive else value > minimum


def _is_id_like(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _workspace(key: str, value: Any) -> str:
    if value not in WORKSPACES:
        raise _Bad(f"bad {key} {value!r} (allowed: {', '.join(WORKSPACES)})")
    return str(value)


def _on_conflict(key: str, value: Any) -> str:
    if value not in ON_CONFLICT:
        raise _Bad(f"bad {key} {value!r} (allowed: {', '.join(ON_CONFLICT)})")
    return str(value)


def _money(key: str, value: Any) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0 < number <= 1_000_000:
        raise _Bad(f"{key!r} must be an amount of US dollars in (0, 1000000], got {value!r}")
    return float(number)


def _relative(key: str, value: Any, source: str) -> Any:
    """Paths in a plan file are relative to the file (URLs stay as they are)."""
    if key not in ("repo", "prompt_template") or not source or not isinstance(value, str):
        return value
    if "://" in value or ("@" in value and ":" in value) or Path(value).expanduser().is_absolute():
        return value
    if not Path(source).suffix:  # a request, not a file
        return value
    return str((Path(source).parent / Path(value).expanduser()).resolve())


def _with_workdir(task: PlanTask, source: str, where: str, problems: list[str]) -> PlanTask:
    """``task`` with its ``workdir`` made absolute: relative to the plan file, or to the current
    directory for a request (the worker may run elsewhere: it gets the path as written here)."""
    if task.workdir is None:
        return task
    if task.executor == "agent":
        problems.append(
            f"{where}: task {task.id!r}: 'workdir' is not for agent tasks: they work in the "
            "run's repository (see 'repo' and 'workspace')"
        )
        return task
    path = Path(task.workdir).expanduser()
    if not path.is_absolute():
        base = Path(source).parent if Path(source).suffix else Path.cwd()
        path = base / path
    return attrs.evolve(task, workdir=str(path.resolve()))


_RUN_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "repo": _name,
    "workspace": _workspace,
    "budget_usd": _money,
    "prompt_template": _name,
    "on_conflict": _on_conflict,
}

_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "title": _text,
    "type": _name,
    "executor": _executor,
    "params": _params,
    "description": _text,
    "priority": _priority,
    "deps": _ids,
    "max_attempts": _attempts,
    "timeout": _seconds(0.0, inclusive=False),
    "files": _strings,
    "estimate": _seconds(0.0, inclusive=True),
    "acceptance": _strings,
    "workdir": _name,
}


# --- checks on a built plan ------------------------------------------------------------------


def _on_failure_problems(plan: Plan) -> list[str]:
    if plan.on_failure in ON_FAILURE:
        return []
    where = plan.source or "plan"
    return [f"{where}: bad on_failure {plan.on_failure!r} (allowed: {', '.join(ON_FAILURE)})"]


def _graph_problems(plan: Plan) -> list[str]:
    """Invalid and duplicate ids, unknown dependencies, then cycles."""
    where = plan.source or "plan"
    ids = {task.id for task in plan.tasks}
    return (
        _id_problems(plan, where)
        + [
            f"{where}: task {task.id!r}: depends on unknown task {dep!r}"
            for task in plan.tasks
            for dep in task.deps
            if dep not in ids
        ]
        + [
            f"{where}: task {cycle[0]!r}: dependency cycle {' -> '.join(cycle)}"
            for cycle in find_cycles(plan)
        ]
    )


def _id_problems(plan: Plan, where: str) -> list[str]:
    problems: list[str] = []
    positions: dict[str, list[int]] = {}
    for position, task in enumerate(plan.tasks, 1):
        positions.setdefault(task.id, []).append(position)
        if not _ID.fullmatch(task.id):
            problems.append(f"{where}: task {task.id!r}: invalid id (use {_ID_RULE})")
    for task_id, found in positions.items():
        if len(found) > 1:
            numbers = ", ".join(f"#{n}" for n in found)
            problems.append(f"{where}: task {task_id!r}: duplicate id (tasks {numbers})")
    return problems


def find_cycles(plan: Plan) -> list[list[str]]:
    """The dependency cycles of a plan, each as ``[a, b, ..., a]`` (empty list: none).

    Found with :func:`shim_core.dag.dependency_order`; after each cycle the edge closing it is
    ignored and the search repeats, so independent cycles are reported too (at most
    :data:`MAX_CYCLES`: each search walks the whole graph). A plan without cycles is walked once.
    """
    graph: dict[str, list[str]] = {}
    for task in plan.tasks:
        graph.setdefault(task.id, list(task.deps))  # the first of duplicate ids
    cycles: list[list[str]] = []
    for _ in range(min(len(graph), MAX_CYCLES)):
        try:
            dependency_order(graph)
        except DependencyCycle as exc:
            cycles.append(exc.cycle)
            graph[exc.cycle[-2]].remove(exc.cycle[-1])
            continue
        break
    return cycles


def _listed(names: Collection[str]) -> str:
    return ", ".join(sorted(names))


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """The plan as a plan file's mapping (what ``shim plan -o`` writes): keys at their default
    are left out, so the file reads like one a person wrote."""
    top: dict[str, Any] = {"name": plan.name}
    for key in ("repo", "workspace", "budget_usd", "prompt_template", "on_conflict"):
        if getattr(plan, key) is not None:
            top[key] = getattr(plan, key)
    if plan.on_failure != ON_FAILURE[0]:
        top["on_failure"] = plan.on_failure
    top["tasks"] = [_task_data(task) for task in plan.tasks]
    return top


def _task_data(task: PlanTask) -> dict[str, Any]:
    data: dict[str, Any] = {"id": task.id}
    blank = PlanTask(id=task.id)
    for field in attrs.fields(PlanTask)[1:]:
        value = getattr(task, field.name)
        if value == getattr(blank, field.name):
            continue
        if isinstance(value, Priority):
            value = value.value
        data[field.name] = list(value) if isinstance(value, tuple) else value
    return data
