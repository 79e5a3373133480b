"""Dependency checks on a batch of tasks: duplicates, self-references, cycles, topological order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
    order: list[Task] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for task in tasks:
        if task.id not in state:
            _visit(task.id, by_id, state, order)
    return order


def _visit(root: str, by_id: dict[str, Task], state: dict[str, int], order: list[Task]) -> None:
    # Iterative DFS so a 10,000-task chain cannot hit the recursion limit.
    path: list[str] = [root]
    stack: list[Iterator[str]] = [iter(by_id[root].dependencies)]
    state[root] = 1
    while stack:
        dep = next(stack[-1], None)
        if dep is None:
            stack.pop()
            done = path.pop()
            state[done] = 2
            order.append(by_id[done])
            continue
        if dep not in by_id or state.get(dep) == 2:
            continue
        if state.get(dep) == 1:
            raise DependencyCycle([*path[path.index(dep) :], dep])
        state[dep] = 1
        path.append(dep)
        stack.append(iter(by_id[dep].dependencies))
