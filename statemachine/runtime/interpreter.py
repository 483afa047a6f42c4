"""The functional core: (definition, state, event, now) -> new state, history, work to do.

No I/O here. Handlers are not run: a task or poll check that must run is left ``running`` in the
state and the executor picks it up (also after a crash, which is how recovery works). Choice and
loop conditions, pass transforms and input mappers are evaluated here: they must be pure. When
one of them fails (``ExpressionError``), the step it belongs to fails, without retries, and its
``on_error`` applies.

``FlowRun`` is one decision: ``FlowBase`` (the state being changed and the primitive operations)
with the flow rules as mixins, one module each (see ``flowbase``). ``decide`` applies one event.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

from statemachine.runtime.lifecycle import Lifecycle
from statemachine.runtime.plan import Plan
from statemachine.runtime.saga import Saga
from statemachine.runtime.scopes import Scopes
from statemachine.runtime.state import FINISHED, SETTLED, State
from statemachine.runtime.steps import StepMachine
from statemachine.runtime.subworkflows import Subworkflows
from statemachine.runtime.timers import Timers
from statemachine.runtime.transitions import (
    Cancel,
    ChildFinished,
    ChildStarted,
    Decision,
    Event,
    EventArrived,
    HistoryItem,
    Retry,
    Start,
    StepDeferred,
    StepFailed,
    StepSucceeded,
    Tick,
    child_id,
)
from statemachine.vocabulary import TERMINAL, InstanceStatus, Phase, StepStatus

__all__ = [
    "Cancel",
    "ChildFinished",
    "ChildStarted",
    "Decision",
    "Event",
    "EventArrived",
    "FlowRun",
    "HistoryItem",
    "Retry",
    "Start",
    "StepDeferred",
    "StepFailed",
    "StepSucceeded",
    "Tick",
    "child_id",
    "decide",
    "next_wake",
]


class FlowRun(StepMachine, Scopes, Timers, Saga, Subworkflows, Lifecycle):
    """One decision: every flow rule, over one clone of the instance's state."""


def decide(plan: Plan, state: State, event: Event, now: datetime, instance_id: str) -> Decision:
    """Apply one event to a copy of ``state``; the input state is never modified.

    An event of a type this function does not know raises (``AssertionError``): ignoring it
    would lose what it reports.
    """
    run = FlowRun(plan, state.clone(), now, instance_id)
    _apply(run, event)
    run.drain()
    _update_status(run)
    _forget_settled(run)
    _remember(run)
    run.state.settle()
    return run.decision


def _apply(run: FlowRun, event: Event) -> None:
    """Past the workflow's deadline, a result, an event or a child's end is too late to count:
    the instance times out instead (``Timers.expire``)."""
    match event:
        case Start():
            run.start()
        case Retry():
            run.retry()
        case Cancel(reason=reason):
            run.cancel(reason)
        case Tick():
            run.tick()  # expires first
        case StepSucceeded(path=path, output=output):
            if not run.expire():
                run.succeeded(path, output)
        case StepFailed(path=path, error=error, retryable=retryable):
            if not run.expire():
                run.failed(path, error, retryable)
        case StepDeferred(path=path, until=until):
            if not run.expire():
                run.deferred(path, until)
        case EventArrived(name=name, data=data):
            if not run.expire():
                run.event(name, data)
        case ChildStarted(path=path):
            if not run.expire():
                run.child_started(path)
        case ChildFinished():
            if not run.expire():
                run.child_finished(event)
        case _:
            assert_never(event)


def _update_status(run: FlowRun) -> None:
    """``waiting`` while every active step waits (a timer, an event, a child), else ``running``."""
    state = run.state
    leaves = [st for p in state.active if (st := state.peek(p)) and st.phase != Phase.BRANCHES]
    if (
        state.status == InstanceStatus.RUNNING
        and leaves
        and all(st.status == StepStatus.WAITING for st in leaves)
    ):
        state.status = InstanceStatus.WAITING
    elif state.status == InstanceStatus.WAITING and any(
        st.status == StepStatus.RUNNING for st in leaves
    ):
        state.status = InstanceStatus.RUNNING


def _forget_settled(run: FlowRun) -> None:
    """A step that completed or was skipped keeps only what its row holds: no later decision
    reads the rest, the state column leaves it out (``State.frontier_json``), and a state
    restored from the database must equal the one that was saved."""
    state = run.state
    for path in run.decision.changed:
        st = state.peek(path)
        if st is None or st.status not in SETTLED:
            continue
        if st.prev or st.phase or st.event or st.deadline or st.handled or st.throttled:
            st = state.edit(path)
            st.prev, st.phase, st.event, st.deadline, st.handled, st.throttled = (
                None,
                Phase.NONE,
                None,
                None,
                False,
                False,
            )


def _remember(run: FlowRun) -> None:
    """The memos of the state (``State.finished_top``, ``State.unsettled``) after this
    decision: the steps it changed are the only ones whose status may have changed (their
    rows are what it writes)."""
    state, changed = run.state, run.decision.changed
    if state.finished_top is None:
        state.finished_top = run.finished_top()
    elif changed:
        top = changed & run.plan.top_level
        done = {p for p in top if (st := state.peek(p)) is not None and st.status in FINISHED}
        state.finished_top = (state.finished_top - top) | done
    if state.unsettled is not None and changed:
        open_ = {
            p for p in changed if (st := state.peek(p)) is not None and st.status not in SETTLED
        }
        state.unsettled = (state.unsettled - changed) | open_


def next_wake(state: State) -> datetime | None:
    """The earliest timer of the instance (retry, poll, delay, wait, timeout); None if none.

    Work that can run now (``Decision.runnable``) is not a timer: callers check it first.
    """
    if state.status in TERMINAL:
        return None
    times = [state.deadline] if state.deadline else []
    for path in state.active:
        st = state.steps.get(path)
        if st is None:
            continue
        if st.wake_at:
            times.append(st.wake_at)
        if st.deadline:
            times.append(st.deadline)
    return min(times) if times else None
