"""What the fleet does with each typed outcome of an execution.

Executors report an outcome (:class:`~shim_core.models.TaskOutcome`); the core decides here, in
one table, and carries the decision out with one Lua transition. No executor holds a Redis
client or has to know what a rate limit means for the rest of the fleet.

=================  ===============================================================================
outcome            what happens
=================  ===============================================================================
success            complete; dependents are released
rate_limited       back to retrying until the limit resets, no attempt spent; the agent cools down
                   fleet-wide (claims move its tasks to retrying until then)
auth_failed        failed at once (no retry); this worker stops claiming the agent's tasks
cli_missing        failed at once (no retry); this worker stops claiming the agent's tasks, unless
                   the task named its own binary (``params.command`` or a generic ``argv``)
rejected           failed at once (no retry): the task was never run (its signature does not
                   verify)
max_turns          failed at once, unless the task set its own ``max_attempts``
budget_exceeded    failed at once, unless the task set its own ``max_attempts``
anything else      a failed attempt: retried with backoff while attempts are left
=================  ===============================================================================
"""

from __future__ import annotations

import enum

import attrs

from shim_core.models import Task, TaskOutcome, TaskResult


class Action(enum.Enum):
    COMPLETE = "complete"
    RETRY = "retry"  # a failed attempt: retried with backoff while attempts are left
    FAIL = "fail"  # failed for good, whatever attempts are left
    THROTTLE = "throttle"  # the agent cools down; the task waits without spending an attempt


@attrs.frozen
class Decision:
    action: Action
    #: The worker stops claiming tasks of the task's agent (it cannot run it).
    refuse_agent: bool = False


_REFUSING = frozenset({TaskOutcome.AUTH_FAILED, TaskOutcome.CLI_MISSING})
_LIMITS = frozenset({TaskOutcome.MAX_TURNS, TaskOutcome.BUDGET_EXCEEDED})


def outcome_of(result: TaskResult) -> TaskOutcome:
    """The result's outcome; ``success`` decides for executors that report none."""
    if not result.success and result.outcome in (None, TaskOutcome.SUCCESS):
        return TaskOutcome.FAILED
    if result.outcome is None:
        return TaskOutcome.SUCCESS
    return result.outcome


def decide(task: Task, result: TaskResult, *, default_attempts: int) -> Decision:
    """What to do with ``result`` of ``task`` (``default_attempts``: the namespace's
    ``max_attempts``, to tell whether the task asked for its own)."""
    outcome = outcome_of(result)
    if outcome is TaskOutcome.SUCCESS:
        return Decision(Action.COMPLETE)
    if outcome is TaskOutcome.RATE_LIMITED:
        return Decision(Action.THROTTLE if task.agent else Action.RETRY)
    if outcome in _REFUSING:
        # A binary the task names itself (params.command, a generic argv) says nothing about
        # what this worker can run for other tasks of the agent.
        own_binary = "command" in task.params or "argv" in task.params
        return Decision(Action.FAIL, refuse_agent=bool(task.agent) and not own_binary)
    if outcome is TaskOutcome.REJECTED:
        return Decision(Action.FAIL)
    if outcome in _LIMITS:
        asked = task.max_attempts is not None and task.max_attempts != default_attempts
        return Decision(Action.RETRY if asked else Action.FAIL)
    return Decision(Action.RETRY)
