"""``Driver``: feeds the pure interpreter the events an executor would send, and keeps the state.

No database and no handlers run: ``StepSucceeded`` stands for a handler that returned, ``Tick``
for time passing. Time is a plain datetime, so waits of days take no time. After every decision
the driver checks invariants and that the state survives the JSON round trip the store puts it
through. Shared by the interpreter's unit tests.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from statemachine import records as rec
from statemachine.definition import models
from statemachine.runtime.interpreter import (
    Cancel,
    Decision,
    Event,
    EventArrived,
    HistoryItem,
    Retry,
    Start,
    StepFailed,
    StepSucceeded,
    Tick,
    decide,
    next_wake,
)
from statemachine.runtime.plan import plan_for
from statemachine.runtime.state import FINISHED, SETTLED, State, StepState

T0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
IID = "inst-1"


def json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def round_trip(state: State) -> State:
    """The state as the store gives it back: frontier JSON plus one row per step."""
    frontier = json.loads(json.dumps(state.frontier_json()))
    rows = [
        rec.StepResult.model_validate_json(st.record().model_dump_json())
        for st in state.steps.values()
    ]
    return State.restore(
        status=state.status,
        input=json_copy(state.input),
        metadata=json_copy(state.metadata),
        frontier=frontier,
        steps=rows,
        output=json_copy(state.output),
        error=json_copy(state.error),
        started_at=state.started_at,
        completed_at=state.completed_at,
    )


class Driver:
    """Sends events to ``decide`` the way an executor does and keeps what comes back."""

    def __init__(
        self,
        definition: models.WorkflowDefinition,
        input: Any = None,
        *,
        metadata: dict[str, Any] | None = None,
        at: datetime = T0,
    ) -> None:
        self.plan = plan_for(definition)
        self.state = State(input=input, metadata=metadata or {})
        self.now = at
        self.history: list[HistoryItem] = []
        self.last: Decision | None = None

    # -- sending events ------------------------------------------------------------------
    def send(self, event: Event, *, at: datetime | None = None) -> Decision:
        if at is not None:
            self.now = at
        before = copy.deepcopy(self.state)
        restored = round_trip(self.state)  # as a runner that just claimed it: no memos yet
        decision = decide(self.plan, self.state, event, self.now, IID)
        assert self.state == before, "decide must not modify its input state"
        again = decide(self.plan, restored, event, self.now, IID)
        assert again.history == decision.history, "the state's memos changed the decision"
        self.state = decision.state
        self.history.extend(decision.history)
        self.last = decision
        self.check()
        return decision

    def check(self) -> None:
        s = self.state
        for path, st in s.steps.items():
            if st.status in ("running", "waiting"):
                assert path in s.active, f"{path} is {st.status} but not active"
        for path in s.active:
            assert s.steps[path].status in ("running", "waiting"), s.steps[path]
        if s.status in ("completed", "failed", "cancelled", "timed_out"):
            assert s.active == []
            assert next_wake(s) is None
        elif s.status in ("running", "waiting"):
            events = [p for p in s.active if s.steps[p].phase == "event"]
            assert self.runnable or next_wake(s) is not None or events, "instance is stuck"
        assert json.dumps(s.frontier_json())
        assert round_trip(s) == s
        # the memos a state carries to the next decision (compare=False: not in ==)
        finished = {
            n for n in self.plan.top_level if n in s.steps and s.steps[n].status in FINISHED
        }
        assert s.finished_top == finished
        assert s.unsettled is not None
        assert s.unsettled >= {p for p, st in s.steps.items() if st.status not in SETTLED}

    def start(self) -> Decision:
        return self.send(Start())

    def ok(self, path: str, output: Any = None) -> Decision:
        return self.send(StepSucceeded(path, output))

    def fail(
        self,
        path: str,
        message: str = "boom",
        *,
        retryable: bool = True,
        type_: str = "ValueError",
    ) -> Decision:
        return self.send(StepFailed(path, {"type": type_, "message": message}, retryable))

    def tick(self, at: datetime | None = None, *, after: Any = None) -> Decision:
        if after is not None:
            at = self.now + (after if isinstance(after, timedelta) else timedelta(seconds=after))
        return self.send(Tick(), at=at)

    def event(self, name: str, data: Any = None) -> Decision:
        return self.send(EventArrived(name, data))

    def cancel(self, reason: str = "cancelled") -> Decision:
        return self.send(Cancel(reason))

    def retry(self) -> Decision:
        return self.send(Retry())

    def run(
        self, handlers: dict[str, Callable[[Any], Any]] | None = None, limit: int = 100
    ) -> None:
        """Run every runnable handler (identity unless given), as an executor would, until idle."""
        handlers = handlers or {}
        for _ in range(limit):
            todo = self.runnable
            if not todo:
                return
            for path in todo:
                fn = handlers.get(path, lambda value: value)
                self.ok(path, fn(self.state.steps[path].input))
        raise AssertionError("still runnable after the limit")

    # -- reading -------------------------------------------------------------------------
    @property
    def runnable(self) -> list[str]:
        return sorted(Decision(self.state).runnable(self.plan))

    @property
    def wake(self) -> datetime | None:
        return next_wake(self.state)

    @property
    def status(self) -> str:
        return self.state.status

    def step(self, path: str) -> StepState:
        return self.state.steps[path]

    def statuses(self) -> dict[str, str]:
        return {p: st.status for p, st in self.state.steps.items()}

    def types(self, step: str | None = None) -> list[str]:
        return [h.type for h in self.history if step is None or h.step == step]

    def items(self, type_: str, step: str | None = None) -> list[HistoryItem]:
        return [h for h in self.history if h.type == type_ and (step is None or h.step == step)]


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)
