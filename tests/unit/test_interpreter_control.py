"""The pure interpreter: cancel, retry of a failed instance, the JSON round trip of a state, and
random event sequences (hypothesis)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine import RetryPolicy, branch, errors, workflow
from statemachine.definition import models
from statemachine.runtime.interpreter import (
    Decision,
    Event,
    EventArrived,
    Retry,
    StepFailed,
    StepSucceeded,
    Tick,
    decide,
    next_wake,
)
from tests.unit.driver import IID, T0, Driver, at, round_trip

# -- events decide does not know --------------------------------------------------------------


@dataclass
class _Unknown:
    """Not one of the interpreter's events (``transitions.Event``)."""

    path: str


def test_an_event_decide_does_not_know_raises_instead_of_being_ignored() -> None:
    """What an unknown event reported would be lost if it were dropped (Temporal's core raises
    on a job it does not know too), also past the workflow's deadline, where known events only
    time the instance out."""
    wf = workflow("unknown").task("a", "noop").timeout("1h").build()
    d = Driver(wf)
    d.start()
    for now in (T0, at(hours=2)):
        with pytest.raises(AssertionError, match="_Unknown"):
            decide(d.plan, d.state, _Unknown("a"), now, IID)  # type: ignore[arg-type]
    assert d.runnable == ["a"]


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_cancels_every_active_step() -> None:
    wf = (
        workflow("cancel")
        .parallel(
            "p",
            branches=[
                branch("a").task("t", "noop").build(),
                branch("b").wait("w", duration="1d").build(),
            ],
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.cancel("user asked")
    assert d.status == "cancelled"
    assert d.statuses() == {"p": "cancelled", "p/a/t": "cancelled", "p/b/w": "cancelled"}
    assert d.state.error == {"type": "Cancelled", "message": "user asked"}
    assert d.types()[-1] == "workflow.cancelled"
    assert d.wake is None
    assert d.ok("p/a/t", 1).history == []
    assert d.tick(at(days=2)).history == []
    assert d.cancel().history == []  # cancelling twice does nothing


# -- the workflow's deadline -----------------------------------------------------------------


def test_a_result_after_the_workflow_deadline_is_too_late() -> None:
    wf = workflow("late").timeout("1h").task("a", "noop").task("b", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.send(StepSucceeded("a", {"a": 1}), at=at(hours=1))
    assert d.status == "timed_out"
    assert d.statuses() == {"a": "cancelled"}  # its result came after the deadline
    assert "workflow.step.completed" not in d.types()
    assert d.types()[-1] == "workflow.timed_out"
    assert d.ok("a", {"a": 2}).history == []


def test_a_last_step_finishing_after_the_deadline_does_not_complete_the_workflow() -> None:
    wf = workflow("late-last").timeout("1h").task("only", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.send(StepFailed("only", {"type": "ValueError", "message": "boom"}, True), at=at(hours=2))
    assert d.status == "timed_out"
    assert d.state.output is None
    assert "workflow.step.failed" not in d.types()


def test_an_event_after_the_workflow_deadline_is_too_late() -> None:
    wf = workflow("late-event").timeout("1h").wait("w", event="go").build()
    d = Driver(wf, {})
    d.start()
    d.send(EventArrived("go", {"x": 1}), at=at(hours=1, seconds=1))
    assert d.status == "timed_out"
    assert d.statuses() == {"w": "cancelled"}


# -- retry of a failed instance --------------------------------------------------------------


def test_retry_continues_from_the_failed_step() -> None:
    wf = (
        workflow("retry")
        .task("a", "noop")
        .task("b", "noop", retry=RetryPolicy(max_attempts=2, interval=1))
        .task("c", "noop")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", "A")
    a_before = copy.deepcopy(d.step("a"))
    d.fail("b")
    d.tick(after=1)
    d.fail("b", "still broken")
    assert d.status == "failed"
    assert d.step("b").attempts == 2

    decision = d.retry()
    assert d.status == "running"
    assert d.state.error is None and d.state.completed_at is None
    assert d.runnable == ["b"]
    assert d.step("b").attempts == 1  # attempts start again
    assert d.step("b").input == "A"
    assert d.step("b").iteration == 0  # same step, same idempotency key
    assert d.step("a") == a_before
    assert "a" not in decision.changed
    d.fail("b")  # the retry policy applies again
    assert d.step("b").status == "waiting"
    d.tick(after=1)
    d.ok("b", "B")
    d.ok("c", "C")
    assert d.status == "completed"
    assert d.state.output == "C"


def test_retry_does_nothing_unless_failed() -> None:
    wf = workflow("r").task("a", "noop").build()
    d = Driver(wf, {})
    d.start()
    assert d.retry().history == []
    d.ok("a", 1)
    assert d.retry().history == []
    assert d.status == "completed"


def test_retry_inside_a_fail_fast_parallel() -> None:
    wf = (
        workflow("par-retry")
        .parallel(
            "p",
            branches=[
                branch("x").task("x1", "noop").task("x2", "noop").build(),
                branch("y").task("y1", "noop").build(),
                branch("z").task("z1", "noop").build(),
            ],
        )
        .task("after", "noop")
        .build()
    )
    d = Driver(wf, {"in": 0})
    d.start()
    d.ok("p/x/x1", "X1")
    d.ok("p/z/z1", "Z1")
    d.fail("p/y/y1", "y broke")
    assert d.status == "failed"
    assert d.step("p/x/x2").status == "cancelled"
    done = {p: copy.deepcopy(d.step(p)) for p in ("p/x/x1", "p/z/z1")}

    d.retry()
    assert d.status == "running"
    assert d.step("p").status == "running"
    assert d.runnable == ["p/x/x2", "p/y/y1"]
    assert d.step("p/x/x2").input == "X1"
    assert d.step("p/y/y1").input == {"in": 0}
    assert {p: d.step(p) for p in done} == done
    d.ok("p/x/x2", "X2")
    d.ok("p/y/y1", "Y1")
    assert d.step("p").output == {"x": "X2", "y": "Y1", "z": "Z1"}
    d.ok("after", "done")
    assert d.status == "completed"


def test_retry_inside_a_wait_all_parallel_keeps_finished_branches() -> None:
    wf = (
        workflow("wa-retry")
        .parallel(
            "p",
            branches=[
                branch("a").task("a1", "noop").build(),
                branch("b").task("b1", "noop").build(),
            ],
            failure="wait-all",
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("p/a/a1", "bad")
    d.ok("p/b/b1", "B")
    assert d.status == "failed"
    d.retry()
    assert d.runnable == ["p/a/a1"]
    d.ok("p/a/a1", "A")
    assert d.state.output == {"a": "A", "b": "B"}


def test_retry_of_a_dag_restarts_the_siblings_the_failure_cancelled() -> None:
    wf = (
        workflow("dag-retry")
        .task("a", "noop")
        .task("b", "noop")
        .task("c", "noop", depends_on=["a", "b"])
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("a", "bad")
    assert d.step("b").status == "cancelled"
    d.retry()
    assert d.runnable == ["a", "b"]
    d.ok("a", 1)
    d.ok("b", 2)
    d.ok("c", 3)
    assert d.status == "completed"


def test_retry_of_a_branch_whose_next_step_never_started() -> None:
    # "x" completes a pure step and queues the next one in the very decision where "y" fails
    wf = (
        workflow("queued")
        .parallel(
            "p",
            branches=[
                branch("x").pass_("x1").task("x2", "noop").build(),
                branch("y")
                .choice("y1", choices=[{"condition": "input.ok", "next": "y2"}])
                .pass_("y2")
                .build(),
            ],
        )
        .build()
    )
    d = Driver(wf, {"ok": False})
    d.start()
    assert d.status == "failed"
    d.state.input = {"ok": True}  # (the data a retried choice reads may have changed)
    d.retry()
    assert d.runnable == ["p/x/x2"]
    d.ok("p/x/x2", "X")
    assert d.status == "completed"
    assert d.state.output == {"x": "X", "y": {"ok": True}}


def test_retry_after_an_event_wait_timed_out() -> None:
    wf = workflow("ev").wait("verify", event="done", timeout="1h").build()
    d = Driver(wf, {})
    d.start()
    d.tick(at(hours=1))
    assert d.status == "failed"
    d.retry()
    assert d.status == "waiting"
    assert d.wake == at(hours=2)
    d.event("done", {"ok": 1})
    assert d.status == "completed"


# -- the JSON round trip ---------------------------------------------------------------------


def _continue(d: Driver, steps: list[Callable[[Driver], Any]]) -> Driver:
    for step in steps:
        step(d)
    return d


def _twins(d: Driver) -> tuple[Driver, Driver]:
    restored = copy.copy(d)
    restored.history = list(d.history)
    restored.state = round_trip(d.state)
    assert json.dumps(d.state.frontier_json())
    return d, restored


def _trip() -> models.WorkflowDefinition:
    return (
        workflow("trip")
        .task("hotel", "book", compensate="cancel")
        .task("audit", "noop")  # nothing to undo: never run again
        .task("flight", "book", compensate="cancel")
        .task("charge", "pay")
        .build()
    )


def _compensate_all(d: Driver) -> None:
    """Run the compensations the instance asks for, newest first, until it has failed."""
    while d.status == "compensating":
        [path] = d.runnable
        d.ok(path, {"cancelled": d.step(path).input})


def test_retry_after_compensation_runs_the_undone_steps_again_first() -> None:
    d = Driver(_trip(), {"city": "Oslo"})
    d.start()
    d.ok("hotel", {"hotel": "h-1"})
    d.ok("audit", "ok")
    d.ok("flight", {"flight": "f-1"})
    d.fail("charge", "declined", retryable=False)
    _compensate_all(d)
    assert d.status == "failed"
    assert d.statuses()["hotel"] == d.statuses()["flight"] == "compensated"
    assert d.step("audit").status == "completed"
    assert d.state.redo == ["hotel", "flight"]
    assert [h.step for h in d.items("workflow.step.compensated")] == ["flight", "hotel"]

    d.retry()
    assert d.runnable == ["hotel"]  # the undone steps first, in the order they ran
    assert d.step("hotel").input == {"city": "Oslo"}  # the input it had
    assert d.step("hotel").iteration == 1  # a new idempotency key: the old booking is gone
    assert d.step("charge").status == "failed"  # resumed after them
    d.ok("hotel", {"hotel": "h-2"})
    assert d.runnable == ["flight"]
    d.ok("flight", {"flight": "f-2"})
    assert d.runnable == ["charge"]
    assert d.step("charge").input == {"flight": "f-2"}
    d.ok("charge", "paid")
    assert d.status == "completed"
    assert d.statuses() == {
        "hotel": "completed",
        "audit": "completed",
        "flight": "completed",
        "charge": "completed",
        "flight#compensate": "completed",
        "hotel#compensate": "completed",
    }
    assert len(d.items("workflow.step.started", "audit")) == 1
    assert d.state.redo == []


def test_a_redo_that_fails_fails_again_and_the_next_retry_redoes_it_first() -> None:
    d = Driver(_trip(), {})
    d.start()
    d.ok("hotel", {"hotel": "h-1"})
    d.ok("audit", "ok")
    d.ok("flight", {"flight": "f-1"})
    d.fail("charge", "declined", retryable=False)
    _compensate_all(d)
    d.retry()
    d.ok("hotel", {"hotel": "h-2"})
    d.fail("flight", "sold out", retryable=False)  # no flight: undo the new hotel booking
    assert d.status == "compensating"
    assert d.runnable == ["hotel#compensate"]
    assert d.step("hotel#compensate").input == {"hotel": "h-2"}
    _compensate_all(d)
    assert d.status == "failed"
    assert d.state.error is not None and d.state.error["message"] == "sold out"
    assert d.state.redo == ["hotel", "flight"]
    d.retry()
    assert d.runnable == ["hotel"]
    d.ok("hotel", {"hotel": "h-3"})
    d.ok("flight", {"flight": "f-3"})
    d.ok("charge", "paid")
    assert d.status == "completed"


def test_retry_after_compensation_in_a_dag() -> None:
    wf = (
        workflow("dag")
        .task("a", "book", compensate="cancel")
        .task("b", "noop", depends_on=["a"])
        .task("c", "book", depends_on=["a"], compensate="cancel")
        .task("d", "pay", depends_on=["b", "c"])
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", "A1")
    d.ok("b", "B1")
    d.ok("c", "C1")
    d.fail("d", "declined", retryable=False)
    _compensate_all(d)
    assert d.state.redo == ["a", "c"]
    d.retry()
    assert d.runnable == ["a"]
    d.ok("a", "A2")
    assert d.runnable == ["c"]  # b did not need undoing: it is not run again
    d.ok("c", "C2")
    assert d.runnable == ["d"]
    assert d.step("d").input == "C2"
    d.ok("d", "paid")
    assert d.status == "completed"
    assert len(d.items("workflow.step.started", "b")) == 1


def test_a_redone_branch_result_reaches_the_join_and_the_steps_after() -> None:
    wf = (
        workflow("par")
        .parallel(
            "p",
            branches=[
                branch("x").task("bx", "book", compensate="cancel").build(),
                branch("y").task("by", "noop").build(),
            ],
        )
        .task("pay", "pay")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("p/x/bx", "X1")
    d.ok("p/y/by", "Y1")
    assert d.step("pay").input == {"x": "X1", "y": "Y1"}
    d.fail("pay", "declined", retryable=False)
    _compensate_all(d)
    assert d.step("p/x/bx").status == "compensated"
    d.retry()
    assert d.runnable == ["p/x/bx"]
    d.ok("p/x/bx", "X2")
    assert d.step("p").output == {"x": "X2", "y": "Y1"}
    assert d.step("pay").input == {"x": "X2", "y": "Y1"}
    d.ok("pay", "paid")
    assert d.status == "completed"


def test_a_pause_holds_the_next_redo_until_resume() -> None:
    d = Driver(_trip(), {})
    d.start()
    d.ok("hotel", {"hotel": "h-1"})
    d.ok("audit", "ok")
    d.ok("flight", {"flight": "f-1"})
    d.fail("charge", "declined", retryable=False)
    _compensate_all(d)
    d.retry()
    d.state.status = "paused"  # as engine.pause leaves it
    d.ok("hotel", {"hotel": "h-2"})
    assert d.runnable == []
    assert d.state.deferred == [["redo", "flight", None]]


def test_a_state_restored_during_a_retry_wait_continues_the_same() -> None:
    wf = (
        workflow("rt")
        .task("a", "noop", retry=RetryPolicy(max_attempts=3, interval="1m", max_interval="1m"))
        .wait("w", duration="1d")
        .task("b", "noop")
        .build()
    )
    d = Driver(wf, {"x": [1, 2]})
    d.start()
    d.fail("a")
    original, restored = _twins(d)
    assert restored.state == original.state
    assert next_wake(restored.state) == at(minutes=1)
    rest: list[Callable[[Driver], Any]] = [
        lambda x: x.tick(at(seconds=30)),
        lambda x: x.tick(at(minutes=1)),
        lambda x: x.ok("a", {"a": True}),
        lambda x: x.tick(at(days=1, minutes=1)),
        lambda x: x.ok("b", "B"),
    ]
    one = _continue(original, rest)
    two = _continue(restored, rest)
    assert one.state == two.state
    assert one.history == two.history
    assert two.status == "completed"
    assert two.step("a").attempts == 2


def test_a_state_restored_during_a_parallel_continues_the_same() -> None:
    wf = (
        workflow("rt-par")
        .task("a", "noop")
        .parallel(
            "p",
            branches=[
                branch("x").task("x1", "noop").wait("xw", event="go", timeout="1h").build(),
                branch("y")
                .task("y1", "noop")
                .task("y2", "noop", depends_on=["y1"])
                .task("y3", "noop", depends_on=["y1"], condition="y1.n > 5")
                .build(),
            ],
            failure="wait-all",
        )
        .loop("again", condition="input.loop && prev.y.y2 < 2", target="a", max_iterations=3)
        .build()
    )
    d = Driver(wf, {"loop": True})
    d.start()
    d.ok("a", "A")
    d.ok("p/x/x1", "X1")
    d.ok("p/y/y1", {"n": 1})
    original, restored = _twins(d)
    assert restored.state == original.state
    rest: list[Callable[[Driver], Any]] = [
        lambda x: x.send(EventArrived("go", {"went": 1})),
        lambda x: x.ok("p/y/y2", 1),
        lambda x: x.ok("a", "A2"),
        lambda x: x.ok("p/x/x1", "X1b"),
        lambda x: x.ok("p/y/y1", {"n": 9}),
        lambda x: x.tick(at(hours=2)),
        lambda x: x.ok("p/y/y2", 5),
        lambda x: x.ok("p/y/y3", 6),
    ]
    one = _continue(original, rest)
    two = _continue(restored, rest)
    assert one.state == two.state
    assert one.history == two.history
    assert two.status == "failed"  # the second event wait timed out
    assert two.state.error is not None
    assert two.state.error["type"] == "BranchFailed"
    assert two.step("p/y/y3").iteration == 1 and two.step("p/y/y2").iteration == 1


def test_frontier_json_is_plain_json() -> None:
    wf = (
        workflow("json")
        .timeout("1d")
        .task("a", "noop")
        .loop("l", condition="prev.more", target="a", interval="1m", timeout="1h")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"more": True})
    frontier = d.state.frontier_json()
    assert json.loads(json.dumps(frontier)) == frontier
    assert frontier["deadline"] == at(days=1).isoformat()
    assert frontier["loop_started"] == {"l": T0.isoformat()}
    assert frontier["extra"]["l"]["wake_at"] == at(minutes=1).isoformat()


# -- random event sequences ------------------------------------------------------------------


def _random_definitions() -> list[models.WorkflowDefinition]:
    seq = (
        workflow("fuzz-seq")
        .timeout("1d")
        .task("a", "noop", retry=RetryPolicy(max_attempts=2, interval="10m"), compensate="undo")
        .parallel(
            "p",
            branches=[
                branch("x")
                .task("x1", "noop", on_error="continue")
                .task("x2", "noop", compensate="undo")
                .build(),
                branch("y")
                .wait("yw", duration="1h")
                .poll("y1", check="noop", interval="20m", max_attempts=3)
                .build(),
            ],
            on_error="branch",
            error_next="recover",
        )
        .loop("again", condition="input.loop", target="a", max_iterations=2)
        .task("b", "noop", end=True)
        .task("recover", "noop")
        .build()
    )
    dag = (
        workflow("fuzz-dag")
        .task("r1", "noop", retry={"max_attempts": 2, "interval": 60})
        .task("r2", "noop", on_error="branch", error_next="h")
        .task("m", "noop", depends_on=["r1", "r2"], trigger="one_success")
        .task("n", "noop", depends_on=["r1"], condition="r1 == 1")
        .parallel(
            "race",
            branches=[
                branch("f").task("f1", "noop").build(),
                branch("s").wait("sw", duration="30m").build(),
            ],
            mode="race",
            depends_on=["m"],
            trigger="all_done",
        )
        .map(
            "mm",
            items=lambda ctx: [1, 2],
            iterator=branch("it").task("t", "noop", retry={"max_attempts": 2}).build(),
            depends_on=["r1"],
        )
        .task("h", "noop")
        .build()
    )
    return [seq, dag]


DEFINITIONS = _random_definitions()
TASK_PATHS = [
    path
    for definition in DEFINITIONS
    for path, step in definition.walk()
    if isinstance(step, models.TaskStep | models.PollStep)
]
OTHER_PATHS = ["p", "again", "race", "p/y/yw", "nope", "race/s/sw", "mm"]
OTHER_PATHS += ["a#compensate", "p/x/x2#compensate"]  # saga: undone, then redone by a retry

result_strategy = st.one_of(
    st.builds(
        StepSucceeded,
        st.sampled_from(TASK_PATHS + OTHER_PATHS),
        st.one_of(
            st.integers(0, 2),
            st.just({"done": True, "result": 1}),
            st.just({"done": False}),
            st.none(),
        ),
    ),
    st.builds(
        StepFailed,
        st.sampled_from(TASK_PATHS + OTHER_PATHS),
        st.just({"type": "ValueError", "message": "fuzz"}),
        st.booleans(),
    ),
)
# (event, aim): aim sends the result to a step that is runnable now, to get far into the flow
aimed_success = st.tuples(
    st.builds(StepSucceeded, st.sampled_from(TASK_PATHS), st.sampled_from([1, {"done": True}])),
    st.just(True),
)
event_strategy = st.one_of(
    aimed_success,
    aimed_success,
    st.tuples(result_strategy, st.booleans()),
    st.tuples(st.just(Tick()), st.sampled_from([0, 5, 20, 60, 600, 2000])),
    st.tuples(st.sampled_from([Retry(), EventArrived("go", 1)]), st.just(0)),
)


def _event(d: Driver, item: tuple[Any, Any]) -> tuple[Event, timedelta]:
    event, extra = item
    if not isinstance(event, StepSucceeded | StepFailed):
        return event, timedelta(minutes=extra)
    if extra and d.runnable:
        path = d.runnable[len(event.path) % len(d.runnable)]
        if isinstance(event, StepSucceeded):
            return StepSucceeded(path, event.output), timedelta(0)
        return StepFailed(path, event.error, event.retryable), timedelta(0)
    return event, timedelta(0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(range(len(DEFINITIONS))),
    loop=st.booleans(),
    events=st.lists(event_strategy, max_size=40),
)
def test_random_events_never_break_the_interpreter(
    which: int, loop: bool, events: list[Any]
) -> None:
    d = Driver(DEFINITIONS[which], {"loop": loop})
    d.start()
    for item in events:
        event, later = _event(d, item)
        # the driver checks invariants and the JSON round trip after each event
        with contextlib.suppress(errors.StatemachineError):
            d.send(event, at=d.now + later)
        for path, stp in d.state.steps.items():
            assert not (stp.status == "running" and path not in d.state.active), path
        if d.status in ("completed", "failed", "cancelled", "timed_out"):
            assert d.state.active == []


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(range(len(DEFINITIONS))), events=st.lists(event_strategy, max_size=30))
def test_random_events_on_a_restored_state_match_the_original(
    which: int, events: list[Any]
) -> None:
    d = Driver(DEFINITIONS[which], {"loop": True})
    d.start()
    original_state, restored_state = d.state, round_trip(d.state)
    now = T0
    for item in events:
        d.state = original_state
        event, later = _event(d, item)
        now += later
        a = decide(d.plan, original_state, event, now, IID)
        b = decide(d.plan, restored_state, event, now, IID)
        assert a.state == b.state
        assert a.history == b.history
        assert a.changed == b.changed
        original_state, restored_state = a.state, round_trip(b.state)
    assert Decision(original_state).runnable(d.plan) == Decision(restored_state).runnable(d.plan)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(range(len(DEFINITIONS))),
    events=st.lists(event_strategy, max_size=30),
)
def test_decide_never_changes_the_state_it_is_given(which: int, events: list[Any]) -> None:
    """A clone shares step records until the interpreter looks one up: whatever the events
    (retries, races, timers), the state a decision started from must come out as it went in."""
    d = Driver(DEFINITIONS[which], {"loop": True})
    d.start()
    now = T0
    for item in events:
        event, later = _event(d, item)
        now += later
        before = copy.deepcopy(d.state.snapshot())
        try:
            decision = decide(d.plan, d.state, event, now, IID)
        except errors.StatemachineError:
            assert d.state.snapshot() == before
            continue
        assert d.state.snapshot() == before
        assert type(decision.state.steps) is dict  # settled: later reads take no copies
        d.state = decision.state
