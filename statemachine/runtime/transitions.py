"""What the interpreter consumes and produces: events in, a decision (new state + history) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statemachine.runtime.plan import Plan
from statemachine.runtime.state import State
from statemachine.vocabulary import Phase, StepStatus


@dataclass
class Start:
    pass


@dataclass
class StepSucceeded:
    path: str
    output: Any


@dataclass
class StepFailed:
    path: str
    error: dict[str, Any]
    retryable: bool = True


@dataclass
class StepDeferred:
    """The step's action is over its limit (``limit_action``): it waits until ``until``
    instead of running, and the attempt it was about to make is not used up."""

    path: str
    until: datetime


@dataclass
class Tick:
    """Time passed: fire every timer that is due."""


@dataclass
class EventArrived:
    name: str
    data: Any


@dataclass
class Cancel:
    reason: str = "cancelled"


@dataclass
class Retry:
    """Continue a failed instance from its failed step(s); completed steps stay completed."""


@dataclass
class ChildStarted:
    """The child instance of a subworkflow step exists; the step now waits for it."""

    path: str


@dataclass
class ChildFinished:
    path: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None


Event = (
    ChildStarted
    | ChildFinished
    | Start
    | StepSucceeded
    | StepFailed
    | StepDeferred
    | Tick
    | EventArrived
    | Cancel
    | Retry
)


@dataclass
class HistoryItem:
    type: str
    step: str | None
    data: dict[str, Any]


@dataclass
class Decision:
    state: State
    history: list[HistoryItem] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    consumed_event: bool = False

    def runnable(self, plan: Plan) -> list[str]:
        """Steps whose handler must run now (tasks, poll checks, compensations left ``running``)."""
        return self.in_phase(Phase.RUN)

    def children(self) -> list[str]:
        """Subworkflow steps whose child instance must be started (idempotently) now."""
        return self.in_phase(Phase.CHILD)

    def in_phase(self, phase: Phase) -> list[str]:
        out = []
        for path in self.state.active:
            st = self.state.steps.get(path)
            if st and st.status == StepStatus.RUNNING and st.phase == phase:
                out.append(path)
        return out


def child_id(instance_id: str, path: str, iteration: int) -> str:
    """The deterministic id of a subworkflow step's child: starting it twice starts it once."""
    return f"{instance_id}:{path}:{iteration}"
