"""Dependency checks on a batch of tasks: duplicates, self-references, cycles, topological order.

Both orders are a depth-first search in input order, dependencies first. An input that is already
in dependency order (every dependency inside the batch comes before its dependents: what plans
and batches usually are) is recognised in one linear pass and returned as it is, which is exactly
what the search would return for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from shim_core.errors import DependencyCycle, DuplicateTask
from shim_core.models import Task


def topological_order(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` with every in-batch dependency before its dependents.

    Raises DuplicateTask for a repeated id and DependencyCycle (naming the cycle) for a cycle.
    Dependencies outside the batch are left for the caller to check against Redis.
    """
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.id in by_id:
            raise DuplicateTask(task.id)
        by_id[task.id] = task
    seen: set[str] = set()
    for task in tasks:
        for dep in task.dependencies:
            if dep not in seen and dep in by_id:  # a dependency later in the batch, or itself
                deps_of = {task_id: t.dependencies for task_id, t in by_id.items()}
                return [by_id[task_id] for task_id in _search(deps_of)]
        seen.add(task.id)
    return list(tasks)


def dependency_order(deps_of: Mapping[str, Sequence[str]]) -> list[str]:
    """The ids of ``deps_of`` (id -> its dependencies) with every dependency before its
    dependents, in the order :func:`topological_order` gives the same tasks.

    Dependencies that are not keys of ``deps_of`` are ignored. Raises DependencyCycle.
    """
    seen: set[str] = set()
    for task_id, deps in deps_of.items():
        for dep in deps:
            if dep not in seen and dep in deps_of:
                return _search(deps_of)
        seen.add(task_id)
    return list(deps_of)


def _search(deps_of: Mapping[str, Sequence[str]]) -> list[str]:
    """Depth-first, roots in the order of ``deps_of``."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for task_id in deps_of:
        if task_id not in state:
            _visit(task_id, deps_of, state, order)
    return order


def _visit(
    root: str, deps_of: Mapping[str, Sequence[str]], state: dict[str, int], order: list[str]
) -> None:
    # Iterative DFS so a 10,000-task chain cannot hit the recursion limit.
    path: list[str] = [root]
    stack: list[Iterator[str]] = [iter(deps_of[root])]
    state[root] = 1
    while stack:
        dep = next(stack[-1], None)
        if dep is None:
            stack.pop()
            done = path.pop()
            state[done] = 2
            order.append(done)
            continue
        if dep not in deps_of or state.get(dep) == 2:
            continue
        if state.get(dep) == 1:
            raise DependencyCycle([*path[path.index(dep) :], dep])
        state[dep] = 1
        path.append(dep)
        stack.append(iter(deps_of[dep]))
