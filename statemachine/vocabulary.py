"""The words every layer shares: statuses, phases, errors as stored, and the value types of the API.

One module, imported by all and importing nothing of ours, so that a status is spelled once. The
enums are ``StrEnum``s: a member *is* its string, so stored rows, JSON and comparisons with plain
strings keep working, and a typo in a member name is a type error instead of a silent mismatch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import NotRequired, TypeAlias, TypedDict


class InstanceStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    COMPENSATED = "compensated"


class Phase(enum.StrEnum):
    """What a step that is not finished is waiting for (stored in the instance's state column)."""

    NONE = ""  # not started, or finished
    DELAY = "delay"  # a task's first attempt is not due yet
    RUN = "run"  # its handler is due or running
    RETRY = "retry"  # backing off before the next attempt
    LIMIT = "limit"  # its action is over its limit (``limit_action``): runs at ``wake_at``
    POLL = "poll"  # between two calls of a poll step
    TIMER = "timer"  # a wait step's timer
    EVENT = "event"  # a wait step waiting for its event
    LOOP = "loop"  # a loop between iterations
    BRANCHES = "branches"  # a parallel or map step with branches in flight
    CHILD = "child"  # a subworkflow step about to start its child
    CHILD_WAIT = "child-wait"  # a subworkflow step waiting for its child to end


#: an instance that is over: nothing more happens to it
TERMINAL: frozenset[InstanceStatus] = frozenset(
    {
        InstanceStatus.COMPLETED,
        InstanceStatus.FAILED,
        InstanceStatus.CANCELLED,
        InstanceStatus.TIMED_OUT,
    }
)
#: an instance that is not over (the complement of TERMINAL)
ACTIVE: frozenset[InstanceStatus] = frozenset(InstanceStatus) - TERMINAL
#: an instance a worker may claim and advance (a paused one waits for resume)
RUNNABLE: frozenset[InstanceStatus] = ACTIVE - {InstanceStatus.PAUSED}
#: started and not over: holds one of its workflow's concurrency slots
STARTED: frozenset[InstanceStatus] = ACTIVE - {InstanceStatus.PENDING}
#: an instance whose run is going on now (neither pending, paused nor over)
IN_FLIGHT: frozenset[InstanceStatus] = STARTED - {InstanceStatus.PAUSED}

#: a step that will not change any more (a compensated step may run again after a retry)
STEP_DONE: frozenset[StepStatus] = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)


class ErrorInfo(TypedDict):
    """An error as stored on a step or an instance, and as users read it back."""

    type: str  # the exception's class name, or the engine's name for the failure
    message: str
    traceback: NotRequired[str]  # a handler's own exception: the last frames
    errors: NotRequired[list[ErrorInfo]]  # a parallel, map or race: the branches' errors


def error_info(type_: str, message: str, *, errors: Sequence[ErrorInfo] | None = None) -> ErrorInfo:
    """The one way an error the engine decides (not a handler's exception) is written."""
    info = ErrorInfo(type=type_, message=message)
    if errors is not None:
        info["errors"] = list(errors)
    return info


#: a value JSON can hold, as the API accepts it (read-only containers, so ``dict[str, int]`` fits)
JSON: TypeAlias = Mapping[str, "JSON"] | Sequence["JSON"] | str | int | float | bool | None
#: a JSON object: a workflow's input, an event's data, metadata
JSONObject: TypeAlias = Mapping[str, JSON]
#: a duration as authors write it: seconds, ``"1h30m"``, or a ``timedelta``
Duration: TypeAlias = int | float | str | timedelta
