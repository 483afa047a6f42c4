"""Event waits, ``send_event`` and ``emit`` triggers on real databases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from statemachine import (
    DefinitionError,
    Engine,
    InputValidationError,
    InstanceNotFound,
    InvalidTransition,
    StepContext,
    load_yaml,
    workflow,
)
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


def _approval(engine: Engine, *, cool_off: bool = False) -> None:
    flow = workflow("approval").task("submit", lambda x: {"doc": x["doc"]})
    if cool_off:
        flow = flow.wait("cool-off", duration="1h")
    engine.register(
        flow.wait("approved", event="approved", timeout="1d")
        .task(
            "publish",
            lambda data, ctx: {"doc": ctx.steps["submit"]["doc"], "by": data["by"]},
        )
        .build()
    )


def test_event_data_becomes_the_wait_output(engine: Engine) -> None:
    _approval(engine)
    inst = engine.execute("approval", {"doc": 7})
    assert inst.status == "waiting"
    assert inst.step_results["approved"].status == "waiting"
    engine.send_event(inst.id, "approved", {"by": "boss"})
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.step_results["approved"].status == "completed"
    assert inst.step_results["approved"].output == {"by": "boss"}
    assert inst.output == {"doc": 7, "by": "boss"}


def test_event_sent_before_the_wait_is_not_lost(engine: Engine, clock: ManualClock) -> None:
    _approval(engine, cool_off=True)
    inst = engine.execute("approval", {"doc": 8})
    assert inst.status == "waiting"
    assert inst.step_results["cool-off"].status == "waiting"
    assert "approved" not in inst.step_results
    engine.send_event(inst.id, "approved", {"by": "early bird"})
    engine.run_due()  # the timer is not due yet: nothing moves, the event stays in the inbox
    assert engine.get(inst.id).step_results["cool-off"].status == "waiting"
    clock.advance("1h")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.step_results["approved"].output == {"by": "early bird"}
    assert inst.output == {"doc": 8, "by": "early bird"}


def test_event_wait_times_out(engine: Engine, clock: ManualClock) -> None:
    _approval(engine)
    inst = engine.execute("approval", {"doc": 9})
    clock.advance("23h")
    engine.run_due()
    assert engine.get(inst.id).status == "waiting"
    clock.advance("1h")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "failed"
    step = inst.step_results["approved"]
    assert step.status == "failed"
    assert step.error is not None and step.error["type"] == "StepTimeoutError"
    assert "publish" not in inst.step_results
    with pytest.raises(InvalidTransition):
        engine.send_event(inst.id, "approved", {"by": "too late"})


def test_send_event_refusals(engine: Engine) -> None:
    engine.register(workflow("quick").task("t", lambda x: x).build())
    _approval(engine)
    done = engine.execute("quick", {"a": 1})
    assert done.status == "completed"
    waiting = engine.execute("approval", {"doc": 1})
    with pytest.raises(InstanceNotFound):
        engine.send_event("no-such-instance", "approved", {})
    with pytest.raises(InvalidTransition):
        engine.send_event(done.id, "approved", {})
    with pytest.raises(InputValidationError):
        engine.send_event(waiting.id, "", {"by": "nobody"})
    engine.run_due()
    assert engine.get(waiting.id).status == "waiting"  # the refused event was not stored
    assert engine.get(done.id).status == "completed"


# -- emit / triggers -----------------------------------------------------------------------


def test_emit_starts_exactly_the_matching_workflows(engine: Engine) -> None:
    seen: dict[str, Any] = {}

    def record(name: str) -> Any:
        def handler(data: Any, ctx: StepContext) -> Any:
            seen[name] = (data, ctx.input)
            return data

        return handler

    engine.register(
        [
            workflow("vip-onboarding")
            .trigger("Customer.upgraded", condition='plan === "enterprise"')
            .task("welcome", record("vip"))
            .build(),
            workflow("free-nudge")
            .trigger("Customer.upgraded", condition='plan === "free"')
            .task("nudge", record("free"))
            .build(),
            workflow("signup-mail")
            .trigger("Customer.created")
            .task("mail", record("signup"))
            .build(),
        ]
    )

    assert engine.emit("Order.placed", {"plan": "enterprise"}) == []
    assert engine.list() == []

    started = engine.emit("Customer.upgraded", {"plan": "enterprise"})

    assert len(started) == 1
    [iid] = started
    inst = engine.get(iid)
    assert inst.workflow_name == "vip-onboarding"
    assert inst.input == {"plan": "enterprise"}
    assert {i.id for i in engine.list()} == {iid}
    engine.run_due()
    assert engine.get(iid).status == "completed"
    assert seen == {"vip": ({"plan": "enterprise"}, {"plan": "enterprise"})}


def test_emit_starts_every_matching_workflow_once(engine: Engine) -> None:
    engine.register(
        [
            workflow("audit")
            .trigger("Customer.upgraded")
            .trigger("Customer.created")
            .task("log", lambda x: x)
            .build(),
            workflow("vip")
            .trigger("Customer.upgraded", condition='plan === "enterprise"')
            .task("welcome", lambda x: x)
            .build(),
        ]
    )
    started = engine.emit("Customer.upgraded", {"plan": "enterprise"})
    assert len(started) == 2 and len(set(started)) == 2
    assert sorted(engine.get(i).workflow_name for i in started) == ["audit", "vip"]
    assert len(engine.emit("Customer.upgraded", {"plan": "team"})) == 1
    assert len(engine.list()) == 3


def test_a_workflow_with_two_matching_triggers_starts_once(engine: Engine) -> None:
    engine.register(
        workflow("twice")
        .trigger("Customer.upgraded")
        .trigger("Customer.upgraded", condition='plan === "enterprise"')
        .task("t", lambda x: x)
        .build()
    )
    started = engine.emit("Customer.upgraded", {"plan": "enterprise"})
    assert len(started) == 1
    assert [i.id for i in engine.list()] == started


def test_trigger_condition_reads_event_and_top_level_names(engine: Engine) -> None:
    engine.register(
        workflow("big-pro")
        .trigger("Deal.closed", condition="event.plan == 'pro' && amount > 10")
        .task("t", lambda x: x)
        .build()
    )
    assert engine.emit("Deal.closed", {"plan": "pro", "amount": 5}) == []
    assert engine.emit("Deal.closed", {"plan": "pro"}) == []  # a missing name: no match
    assert engine.emit("Deal.closed", None) == []
    [iid] = engine.emit("Deal.closed", {"plan": "pro", "amount": 50})
    assert engine.get(iid).input == {"plan": "pro", "amount": 50}


def test_a_trigger_condition_with_bad_syntax_is_refused_at_build() -> None:
    with pytest.raises(DefinitionError):
        workflow("bad").trigger("E", condition="plan === ").task("t", lambda x: x).build()


class Seats(BaseModel):
    plan: str
    seats: int


def test_emit_with_data_failing_one_schema_is_all_or_nothing(engine: Engine) -> None:
    engine.register(workflow("untyped").trigger("Plan.changed").task("t", lambda x: x).build())
    engine.register(
        workflow("typed", input_schema=Seats).trigger("Plan.changed").task("t", lambda x: x).build()
    )
    try:
        started = engine.emit("Plan.changed", {"plan": "team"})  # no "seats": Seats refuses it
    except InputValidationError:
        assert engine.list() == [], "emit raised, yet it had started a workflow"
    else:
        assert sorted(started) == sorted(i.id for i in engine.list())


# -- timeouts and odd events ---------------------------------------------------------------


def test_event_timeout_with_on_error_continue(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("optional-approval")
        .wait("approved", event="approved", timeout="1d", on_error="continue")
        .pass_("after", transform=lambda ctx: ctx.prev)
        .build()
    )
    inst = engine.execute("optional-approval", {})
    clock.advance("1d")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.step_results["approved"].status == "failed"
    assert inst.output["error"]["type"] == "StepTimeoutError"


def test_an_event_after_a_timeout_goes_to_the_next_wait(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("second-chance")
        .wait("first", event="go", timeout="1h", on_error="continue")
        .wait("second", event="go")
        .build()
    )
    inst = engine.execute("second-chance", {})
    clock.advance("1h")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "waiting"
    assert inst.step_results["first"].status == "failed"
    engine.send_event(inst.id, "go", 5)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == 5


def test_an_event_received_before_the_deadline_wins(engine: Engine, clock: ManualClock) -> None:
    engine.register(workflow("in-time").wait("w", event="go", timeout="1h").build())
    inst = engine.execute("in-time", {})
    clock.advance("30m")
    engine.send_event(inst.id, "go", "made it")
    clock.advance("1h")  # no engine ran between the event and the deadline
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == "made it"


def test_send_event_refuses_bad_names_and_data(engine: Engine) -> None:
    engine.register(workflow("strict").wait("w", event="go").build())
    inst = engine.execute("strict", {})
    with pytest.raises(InputValidationError):
        engine.send_event(inst.id, "go", {"x": object()})
    with pytest.raises(InputValidationError):
        engine.send_event(inst.id, "go", float("nan"))
    with pytest.raises(InputValidationError):
        engine.send_event(inst.id, None, 1)  # type: ignore[arg-type]
    engine.run_due()
    assert engine.get(inst.id).status == "waiting"


class PlanOnly(BaseModel):
    plan: str


WELCOME = """
id: welcome-deal
triggers:
  - event: Deal.closed
steps:
  - id: greet
    type: pass
    condition: event.amount > 10
    result: {plan: "${{ event.plan }}", amount: "${{ event.amount }}", input: "${{ input }}"}
  - id: cool-off
    type: wait
    duration: 1h
  - id: thank
    action: thank
    params:
      note: "thanks for ${{ event.amount }}"
      event: ${{ event }}
"""


def test_step_expressions_see_the_trigger_event_after_a_restart(
    db_url: str, clock: ManualClock
) -> None:
    def open_engine() -> Engine:
        eng = Engine(db_url, clock=clock)
        eng.action("thank")(lambda data: data)
        eng.register(load_yaml(WELCOME).model_copy(update={"input_schema": PlanOnly}))
        return eng

    first = open_engine()
    try:
        [iid] = first.emit("Deal.closed", {"plan": "pro", "amount": 50})
        first.run_due()
        inst = first.get(iid)
        assert inst.input == {"plan": "pro"}  # the schema keeps only the plan; the event has all
        assert inst.step_results["greet"].output == {
            "plan": "pro",
            "amount": 50,
            "input": {"plan": "pro"},
        }
        assert inst.status == "waiting"
        started = first.start("welcome-deal", {"plan": "pro"})  # not by a trigger: event is null
        first.run_due()
        assert first.get(started).step_results["greet"].status == "failed"  # null.amount
    finally:
        first.close()
    clock.advance("1h")
    second = open_engine()  # a new engine: the event comes back from the database
    try:
        second.run_due()
        inst = second.get(iid)
        assert inst.status == "completed", inst.error
        assert inst.output == {
            "note": "thanks for 50",
            "event": {"plan": "pro", "amount": 50},
        }
        replayed = second.replay(iid)  # the same event again
        second.run_due()
        clock.advance("1h")
        second.run_due()
        assert second.get(replayed).output == inst.output
    finally:
        second.close()
