"""The pure interpreter, driven event by event like an executor would: sequential flow.

The ``Driver`` (``tests/unit/driver.py``) feeds ``decide`` the events an executor would send
and checks invariants after every decision.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from statemachine import RetryPolicy, workflow
from statemachine.definition import models
from statemachine.runtime import retries
from statemachine.runtime.interpreter import StepFailed, StepSucceeded
from tests.unit.driver import T0, Driver, at, round_trip

# -- sequential tasks ------------------------------------------------------------------------


def test_sequential_tasks_pass_outputs_along_and_complete_with_the_last() -> None:
    wf = workflow("seq").task("a", "noop").task("b", "noop").task("c", "noop").build()
    d = Driver(wf, {"n": 1})
    d.start()
    assert d.status == "running"
    assert d.runnable == ["a"]
    assert d.step("a").input == {"n": 1}
    assert d.step("a").attempts == 1
    assert d.wake is None  # no timer: the executor runs "a" now

    d.ok("a", {"n": 2})
    assert d.step("a").status == "completed"
    assert d.step("a").output == {"n": 2}
    assert d.runnable == ["b"]
    assert d.step("b").input == {"n": 2}

    d.ok("b", {"n": 3})
    assert d.step("c").input == {"n": 3}
    d.ok("c", {"n": 4})
    assert d.status == "completed"
    assert d.state.output == {"n": 4}
    assert d.state.completed_at == T0
    assert d.state.active == []
    assert d.types()[0] == "workflow.step.started"
    assert d.types()[-1] == "workflow.completed"
    assert d.items("workflow.completed")[0].data == {"output": {"n": 4}}
    assert d.items("workflow.step.completed", "b")[0].data == {"output": {"n": 3}, "attempt": 1}
    assert d.state.order == []  # nothing declares ``compensate``: nothing to undo


def test_progress_is_reported_between_0_and_100_and_ends_at_100() -> None:
    wf = workflow("seq").task("a", "noop").task("b", "noop").task("c", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.run()
    values = [h.data["progress"] for h in d.items("workflow.progress")]
    assert values == [33, 67, 100]
    assert d.types()[-2:] == ["workflow.progress", "workflow.completed"]


def test_progress_ends_at_100_when_steps_are_jumped_over() -> None:
    from statemachine import when

    wf = (
        workflow("jump")
        .task("a", "noop")
        .choice("route", choices=[when("prev.fast", next="d")], default="b")
        .task("b", "noop")
        .task("c", "noop")
        .pass_("d", result=1)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"fast": True})
    values = [h.data["progress"] for h in d.items("workflow.progress")]
    assert all(0 <= v <= 100 for v in values)
    assert values[-1] == 100
    assert values[:-1] == sorted(values[:-1])
    assert d.status == "completed"
    assert "b" not in d.state.steps and "c" not in d.state.steps


def test_input_mapper_gets_prev_and_workflow_input() -> None:
    wf = (
        workflow("mapper")
        .task("a", "noop")
        .task("b", "noop", input=lambda prev, wf_input: {"p": prev["x"], "id": wf_input["id"]})
        .task("c", "noop", input=lambda prev: {"only_prev": prev})
        .build()
    )
    d = Driver(wf, {"id": "o-1"})
    d.start()
    d.ok("a", {"x": 7})
    assert d.step("b").input == {"p": 7, "id": "o-1"}
    d.ok("b", "B")
    assert d.step("c").input == {"only_prev": "B"}


def test_templates_in_a_task_input_are_typed_alone_and_interpolated_in_text() -> None:
    wf = (
        workflow("tmpl")
        .task("validate", "noop")
        .task(
            "charge",
            "noop",
            input={
                "order": "${{ input.orderId }}",
                "amount": "${{ validate.total * 2 }}",
                "note": "order ${{ input.orderId }} of ${{ prev.total }}",
                "items": ["${{ input.items[0] }}", "plain"],
                "via_steps": "${{ steps.validate.total }}",
                "meta": "${{ metadata.tenant }}",
            },
        )
        .build()
    )
    d = Driver(wf, {"orderId": 42, "items": ["x", "y"]}, metadata={"tenant": "acme"})
    d.start()
    d.ok("validate", {"total": 10})
    assert d.step("charge").input == {
        "order": 42,
        "amount": 20,
        "note": "order 42 of 10",
        "items": ["x", "plain"],
        "via_steps": 10,
        "meta": "acme",
    }


def test_the_input_given_to_a_handler_is_a_copy() -> None:
    wf = workflow("copy").task("a", "noop").build()
    data = {"nested": {"k": 1}}
    d = Driver(wf, data)
    d.start()
    d.step("a").input["nested"]["k"] = 2
    assert d.state.input == {"nested": {"k": 1}}


def test_a_failing_input_mapper_fails_the_step_cleanly() -> None:
    wf = (
        workflow("bad-mapper")
        .task("a", "noop")
        .task("b", "noop", input=lambda prev, wf_input: prev["missing"])
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {})
    assert d.status == "failed"
    assert d.step("b").status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "ExpressionError"
    assert "KeyError" in d.state.error["message"]
    assert d.state.error["step"] == "b"


# -- pass, end, next -------------------------------------------------------------------------


def test_pass_result_transform_and_pass_through() -> None:
    wf = (
        workflow("passes")
        .task("a", "noop")
        .pass_("static", result={"fixed": True, "from": "${{ a.v }}"})
        .pass_("through")
        .pass_("shaped", transform=lambda ctx: {"prev": ctx.prev, "a": ctx.steps["a"]["v"]})
        .pass_("expr", transform="shaped.a + 1")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"v": 5})
    assert d.step("static").output == {"fixed": True, "from": 5}
    assert d.step("through").output == {"fixed": True, "from": 5}
    assert d.step("shaped").output == {"prev": {"fixed": True, "from": 5}, "a": 5}
    assert d.status == "completed"
    assert d.state.output == 6


def test_end_and_next_jump_over_steps() -> None:
    from statemachine import when

    wf = (
        workflow("ends")
        .choice("route", choices=[when("input.x > 0", next="a")], default="b")
        .task("a", "noop", next="c")
        .task("b", "noop")
        .task("c", "noop")
        .end("done")
        .build()
    )
    d = Driver(wf, {"x": 1})
    d.start()
    assert d.runnable == ["a"]
    d.ok("a", "A")
    assert d.runnable == ["c"]
    assert d.step("c").input == "A"
    d.ok("c", "C")
    assert d.status == "completed"
    assert d.state.output == "C"  # .end() passes prev through
    assert "b" not in d.state.steps


def test_end_true_on_a_task() -> None:
    from statemachine import when

    wf = (
        workflow("endtask")
        .choice("route", choices=[when("input.a", next="a")], default="b")
        .task("a", "noop", end=True)
        .task("b", "noop")
        .build()
    )
    d = Driver(wf, {"a": True})
    d.start()
    d.ok("a", 1)
    assert d.status == "completed"
    assert d.state.output == 1
    assert "b" not in d.state.steps


def test_a_workflow_of_only_pure_steps_completes_on_start() -> None:
    wf = workflow("pure").pass_("a", result=1).pass_("b", transform="prev + 1").build()
    d = Driver(wf, None)
    d.start()
    assert d.status == "completed"
    assert d.state.output == 2


def test_a_long_chain_of_pure_steps_does_not_recurse() -> None:
    builder = workflow("long")
    for i in range(600):
        builder = builder.pass_(f"s{i}", transform="prev + 1")
    d = Driver(builder.build(), 0)
    d.start()
    assert d.status == "completed"
    assert d.state.output == 600


def test_start_twice_does_nothing() -> None:
    wf = workflow("seq").task("a", "noop").build()
    d = Driver(wf, {})
    d.start()
    decision = d.start()
    assert decision.history == []
    assert d.runnable == ["a"]


# -- choice ----------------------------------------------------------------------------------


def _choice_workflow(default: str | None = "z") -> models.WorkflowDefinition:
    from statemachine import when

    builder = (
        workflow("choice")
        .task("a", "noop")
        .choice(
            "route",
            choices=[
                when("prev.kind == 'x'", next="x"),
                when(lambda ctx: ctx.steps["a"]["kind"] in ("x", "y"), next="y"),
                {"condition": "a.kind === 'w' && input.flag", "next": "w"},
            ],
            default=default,
        )
        .pass_("x", result="X", end=True)
        .pass_("y", result="Y", end=True)
        .pass_("w", result="W", end=True)
    )
    return (builder.pass_("z", result="Z") if default else builder).build()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("x", "X"), ("y", "Y"), ("w", "W"), ("other", "Z")],
)
def test_choice_first_match_wins_else_default(kind: str, expected: str) -> None:
    d = Driver(_choice_workflow(), {"flag": True})
    d.start()
    d.ok("a", {"kind": kind})
    assert d.status == "completed"
    assert d.state.output == expected
    assert d.step("route").status == "completed"
    assert d.step("route").output == {"kind": kind}  # a choice passes prev on
    ran = {p for p in d.state.steps if p in ("x", "y", "w", "z")}
    assert ran == {expected.lower()}


def test_choice_without_match_or_default_fails_the_workflow_clearly() -> None:
    d = Driver(_choice_workflow(default=None), {"flag": False})
    d.start()
    d.ok("a", {"kind": "w"})
    assert d.status == "failed"
    assert d.step("route").status == "failed"
    error = d.state.error
    assert error is not None
    assert error["type"] == "NoChoiceMatched"
    assert "route" in error["message"] and "no default" in error["message"]
    assert d.items("workflow.failed")[0].data == {"error": error}


def test_choice_condition_returning_a_non_bool_fails_the_step() -> None:
    from statemachine import when

    wf = (
        workflow("nonbool")
        .choice("c", choices=[when(lambda ctx: "yes", next="a")], default="a")
        .pass_("a")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "ExpressionError"
    assert "expected True or False" in d.state.error["message"]


def test_choice_can_jump_back_and_each_pass_counts_an_iteration() -> None:
    from statemachine import when

    wf = (
        workflow("again")
        .task("work", "noop")
        .choice("more", choices=[when("prev.left > 0", next="work")], default="done")
        .pass_("done")
        .build()
    )
    d = Driver(wf, {"left": 2})
    d.start()
    d.ok("work", {"left": 1})
    assert d.runnable == ["work"]
    assert d.step("work").iteration == 1
    assert d.step("work").input == {"left": 1}
    d.ok("work", {"left": 0})
    assert d.status == "completed"
    assert [h.data["iteration"] for h in d.items("workflow.step.started", "work")] == [0, 1]


# -- retries ---------------------------------------------------------------------------------


def test_retry_policy_backs_off_then_fails_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, interval="1s", backoff_rate=2)
    wf = workflow("retry").task("a", "noop", retry=policy).task("b", "noop").build()
    d = Driver(wf, {"k": 1})
    d.start()
    d.fail("a", "first")
    st = d.step("a")
    assert st.status == "waiting"
    assert d.status == "waiting"
    assert d.runnable == []
    assert d.wake == at(seconds=1)
    retry = d.items("workflow.step.retry")
    assert [h.data["delay"] for h in retry] == [1.0]
    assert retry[0].data["attempt"] == 1
    assert retry[0].data["error"]["message"] == "first"

    quiet = d.tick(at(seconds=0.5))
    assert quiet.history == [] and quiet.changed == set()
    assert d.runnable == []

    d.tick(at(seconds=1))
    assert d.runnable == ["a"]
    assert d.step("a").attempts == 2
    assert d.step("a").input == {"k": 1}
    assert d.status == "running"

    d.fail("a", "second")
    assert [h.data["delay"] for h in d.items("workflow.step.retry")] == [1.0, 2.0]
    assert d.wake == at(seconds=3)
    d.tick(at(seconds=3))
    assert d.step("a").attempts == 3

    d.fail("a", "third")
    assert d.step("a").status == "failed"
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["message"] == "third"
    assert d.state.error["attempt"] == 3
    assert d.state.error["step"] == "a"
    assert len(d.items("workflow.step.retry")) == 2
    assert len(d.items("workflow.step.failed")) == 1
    assert "b" not in d.state.steps


def test_retry_then_success_records_the_attempt() -> None:
    wf = workflow("retry").task("a", "noop", retry={"max_attempts": 3, "interval": 10}).build()
    d = Driver(wf, {})
    d.start()
    d.fail("a")
    d.tick(after=10)
    d.ok("a", "fine")
    assert d.status == "completed"
    assert d.step("a").attempts == 2
    assert d.step("a").error is None
    assert d.items("workflow.step.completed", "a")[0].data["attempt"] == 2


def test_delays_are_capped_at_max_interval() -> None:
    policy = RetryPolicy(max_attempts=5, interval=1, backoff_rate=10, max_interval=15)
    wf = workflow("cap").task("a", "noop", retry=policy).build()
    d = Driver(wf, {})
    d.start()
    for _ in range(4):
        d.fail("a")
        wake = d.wake
        assert wake is not None
        d.tick(wake)
    assert [h.data["delay"] for h in d.items("workflow.step.retry")] == [1.0, 10.0, 15.0, 15.0]
    d.fail("a")
    assert d.status == "failed"


def test_max_interval_caps_the_first_delay_too() -> None:
    policy = RetryPolicy(max_attempts=3, interval=10, max_interval=5)
    assert retries.delay(policy, 1) == 5.0
    wf = workflow("cap").task("a", "noop", retry=policy).build()
    d = Driver(wf, {})
    d.start()
    d.fail("a")
    assert d.wake == at(seconds=5)
    assert d.items("workflow.step.retry")[0].data["delay"] == 5.0


def test_a_non_retryable_failure_fails_at_once() -> None:
    wf = workflow("crit").task("a", "noop", retry=RetryPolicy(max_attempts=5)).build()
    d = Driver(wf, {})
    d.start()
    d.fail("a", "fatal", retryable=False, type_="CriticalError")
    assert d.status == "failed"
    assert d.items("workflow.step.retry") == []
    assert d.state.error is not None
    assert d.state.error["type"] == "CriticalError"
    assert d.state.error["attempt"] == 1


def test_workflow_default_retry_applies_and_a_step_policy_overrides_it() -> None:
    wf = (
        workflow("defaults")
        .default_retry(max_attempts=2, interval="5s")
        .task("a", "noop")
        .task("b", "noop", retry=RetryPolicy(max_attempts=1))
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("a")
    assert d.wake == at(seconds=5)
    d.tick(at(seconds=5))
    d.ok("a", 1)
    d.fail("b")
    assert d.status == "failed"
    assert [h.step for h in d.items("workflow.step.retry")] == ["a"]


def test_without_any_policy_a_step_is_tried_once() -> None:
    wf = workflow("once").task("a", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.fail("a")
    assert d.status == "failed"
    assert d.step("a").attempts == 1
    assert d.items("workflow.step.retry") == []


def test_results_for_unknown_or_idle_steps_are_ignored() -> None:
    wf = workflow("idle").task("a", "noop").wait("w", duration="1h").task("b", "noop").build()
    d = Driver(wf, {})
    d.start()
    for event in (StepSucceeded("zzz", 1), StepFailed("zzz", {}), StepSucceeded("b", 1)):
        decision = d.send(event)
        assert decision.history == [] and decision.changed == set()
    d.ok("a", 1)
    decision = d.ok("w", "early")  # a wait has no handler
    assert decision.history == []
    assert d.step("w").status == "waiting"


# -- on_error --------------------------------------------------------------------------------


def test_on_error_continue_records_the_failure_and_flows_on() -> None:
    wf = (
        workflow("cont")
        .task("a", "noop", on_error="continue")
        .task("b", "noop")
        .task("c", "noop", on_error="continue")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("a", "bad a", retryable=False)
    assert d.step("a").status == "failed"
    assert d.step("a").handled
    assert d.runnable == ["b"]
    b_input = d.step("b").input
    assert b_input["error"]["message"] == "bad a"
    assert b_input["error"]["step"] == "a"
    d.ok("b", "B")
    d.fail("c", "bad c")
    assert d.status == "completed"
    assert d.state.output["error"]["message"] == "bad c"
    assert [h.step for h in d.items("workflow.step.failed")] == ["a", "c"]


def test_on_error_branch_goes_to_the_error_step_with_the_error_as_prev() -> None:
    wf = (
        workflow("br")
        .task("charge", "noop", on_error="branch", error_next="refund", retry={"max_attempts": 2})
        .task("ship", "noop", end=True)
        .task("refund", "noop")
        .build()
    )
    d = Driver(wf, {"o": 1})
    d.start()
    d.fail("charge", "declined")
    assert d.step("charge").status == "waiting"  # retries come first
    d.tick(after=1)
    d.fail("charge", "declined again")
    assert d.step("charge").status == "failed"
    assert d.runnable == ["refund"]
    refund_input = d.step("refund").input
    assert refund_input == {"error": d.step("charge").error}
    assert refund_input["error"]["message"] == "declined again"
    assert refund_input["error"]["attempt"] == 2
    d.ok("refund", "refunded")
    assert d.status == "completed"
    assert d.state.output == "refunded"
    assert "ship" not in d.state.steps


def test_on_error_fail_fails_the_workflow_with_the_error() -> None:
    wf = workflow("ff").task("a", "noop").task("b", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.ok("a", 1)
    d.fail("b", "nope", type_="RuntimeError")
    assert d.status == "failed"
    assert d.state.error == {"type": "RuntimeError", "message": "nope", "step": "b", "attempt": 1}
    assert d.items("workflow.failed")[0].data["error"] == d.state.error
    assert d.step("a").status == "completed"
    assert d.state.completed_at == T0


# -- wait ------------------------------------------------------------------------------------


def test_wait_duration_of_days() -> None:
    wf = workflow("wait").task("a", "noop").wait("cool", duration="3d").task("b", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"v": 1})
    assert d.step("cool").status == "waiting"
    assert d.status == "waiting"
    assert d.wake == at(days=3)
    assert d.runnable == []
    quiet = d.tick(at(days=2))
    assert quiet.history == []
    assert d.step("cool").status == "waiting"
    d.tick(at(days=3))
    assert d.step("cool").status == "completed"
    assert d.step("cool").output == {"v": 1}
    assert d.runnable == ["b"]
    assert d.step("b").input == {"v": 1}
    assert d.status == "running"


def test_wait_until_a_datetime_or_a_callable() -> None:
    when_ = T0 + timedelta(hours=5)
    wf = (
        workflow("until")
        .wait("fixed", until=when_)
        .wait("dynamic", until=lambda ctx: ctx.input["at"])
        .build()
    )
    d = Driver(wf, {"at": (T0 + timedelta(days=1)).isoformat()})
    d.start()
    assert d.wake == when_
    d.tick(when_ - timedelta(seconds=1))
    assert d.step("fixed").status == "waiting"
    d.tick(when_)
    assert d.step("dynamic").status == "waiting"
    assert d.wake == at(days=1)
    d.tick(at(days=1))
    assert d.status == "completed"


def test_wait_for_an_event() -> None:
    wf = workflow("ev").wait("verify", event="emailVerified").task("welcome", "noop").build()
    d = Driver(wf, {})
    d.start()
    assert d.status == "waiting"
    assert d.step("verify").event == "emailVerified"
    assert d.wake is None
    wrong = d.event("other", {"x": 1})
    assert wrong.history == [] and not wrong.consumed_event
    right = d.event("emailVerified", {"email": "a@b.c"})
    assert right.consumed_event
    assert d.step("verify").output == {"email": "a@b.c"}
    assert d.runnable == ["welcome"]
    assert d.step("welcome").input == {"email": "a@b.c"}
    again = d.event("emailVerified", {"email": "late"})
    assert not again.consumed_event


def test_event_wait_timeout_fails_with_step_timeout_error() -> None:
    wf = workflow("evt").wait("verify", event="emailVerified", timeout="2d").build()
    d = Driver(wf, {})
    d.start()
    assert d.wake == at(days=2)
    d.tick(at(days=1))
    assert d.step("verify").status == "waiting"
    d.tick(at(days=2))
    assert d.step("verify").status == "failed"
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "StepTimeoutError"
    assert "emailVerified" in d.state.error["message"]
    assert not d.event("emailVerified", {}).consumed_event


def test_a_step_delay_waits_before_the_step_runs() -> None:
    wf = workflow("delay").task("a", "noop").task("b", "noop", delay="1h").build()
    d = Driver(wf, {})
    d.start()
    d.ok("a", "A")
    assert d.step("b").status == "waiting"
    assert d.wake == at(hours=1)
    d.tick(at(hours=1))
    assert d.runnable == ["b"]
    assert d.step("b").input == "A"


def test_expressions_read_the_trigger_event_kept_in_the_state() -> None:
    wf = (
        workflow("evt")
        .task("a", "noop", input={"plan": "${{ event.plan }}"}, condition="event.amount > 10")
        .build()
    )
    d = Driver(wf, {"plan": "x"})
    d.state.trigger_event = {"plan": "pro", "amount": 50}
    d.start()  # the driver checks the event survives the store's round trip
    assert d.state.frontier_json()["event"] == {"plan": "pro", "amount": 50}
    assert d.step("a").input == {"plan": "pro"}


# -- poll ------------------------------------------------------------------------------------


def test_poll_until_done() -> None:
    wf = workflow("poll").poll("job", check="noop", interval="10m", max_attempts=5).build()
    d = Driver(wf, {"id": 1})
    d.start()
    assert d.runnable == ["job"]
    assert d.step("job").input == {"id": 1}
    d.ok("job", {"done": False, "result": "30%"})
    assert d.step("job").status == "waiting"
    assert d.status == "waiting"
    assert d.wake == at(minutes=10)
    polls = d.items("workflow.step.poll")
    assert [(h.data["attempt"], h.data["result"]) for h in polls] == [(1, "30%")]
    assert d.tick(at(minutes=5)).history == []
    d.tick(at(minutes=10))
    assert d.runnable == ["job"]
    assert d.step("job").attempts == 2
    d.ok("job", {"done": True, "result": {"url": "x"}})
    assert d.status == "completed"
    assert d.step("job").output == {"url": "x"}
    assert d.state.output == {"url": "x"}


@pytest.mark.parametrize(
    "output", [{"status": "pending"}, {"done": "false"}, "not yet", True, None, {"done": 1}]
)
def test_poll_check_of_any_other_shape_fails_the_step_showing_it(output: Any) -> None:
    wf = workflow("poll").poll("job", check="noop", interval="10m", max_attempts=5).build()
    d = Driver(wf, {})
    d.start()
    d.ok("job", output)
    assert d.status == "failed"
    assert d.step("job").attempts == 1  # not retried: the check must be fixed
    error = d.state.error
    assert error is not None
    assert error["type"] == "InvalidPollResult"
    assert json.dumps(output) in error["message"]
    assert '{"done": true or false, "result": ...}' in error["message"]


def test_poll_fails_after_max_attempts() -> None:
    wf = workflow("poll").poll("job", check="noop", interval=60, max_attempts=3).build()
    d = Driver(wf, {})
    d.start()
    for i in range(3):
        d.ok("job", {"done": False})
        if i < 2:
            d.tick(after=60)
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "StepTimeoutError"
    assert "3 checks" in d.state.error["message"]
    assert len(d.items("workflow.step.poll")) == 3


def test_poll_fails_at_its_timeout() -> None:
    wf = workflow("poll").poll("job", check="noop", interval="10m", timeout="25m").build()
    d = Driver(wf, {})
    d.start()
    d.ok("job", {"done": False})
    d.tick(at(minutes=10))
    d.ok("job", {"done": False})
    d.tick(at(minutes=20))
    d.ok("job", {"done": False})
    assert d.wake == at(minutes=25)  # the next check would come after the deadline
    d.tick(at(minutes=25))
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "StepTimeoutError"


# -- loop ------------------------------------------------------------------------------------


def test_loop_jumps_back_while_the_condition_holds() -> None:
    wf = (
        workflow("loop")
        .task("fetch", "noop")
        .task("store", "noop")
        .loop("again", condition="prev.more", target="fetch", max_iterations=5)
        .task("after", "noop")
        .build()
    )
    d = Driver(wf, {"page": 0})
    d.start()
    d.ok("fetch", {"page": 1})
    d.ok("store", {"more": True, "page": 1})
    loops = d.items("workflow.step.loop")
    assert [(h.data["iteration"], h.data["target"]) for h in loops] == [(1, "fetch")]
    assert d.runnable == ["fetch"]
    assert d.step("fetch").input == {"more": True, "page": 1}
    assert d.step("fetch").iteration == 1
    d.ok("fetch", {"page": 2})
    assert d.step("store").iteration == 1  # every step of the body counts iterations
    d.ok("store", {"more": True, "page": 2})
    d.ok("fetch", {"page": 3})
    d.ok("store", {"more": False, "page": 3})
    assert d.runnable == ["after"]
    assert d.step("after").input == {"more": False, "page": 3}
    assert d.state.loops == {}
    assert d.state.loop_started == {}
    assert [h.data["iteration"] for h in d.items("workflow.step.loop")] == [1, 2]
    started = [h.data["iteration"] for h in d.items("workflow.step.started", "store")]
    assert started == [0, 1, 2]


def test_loop_fails_past_max_iterations() -> None:
    wf = (
        workflow("loop")
        .task("fetch", "noop")
        .loop("again", condition="prev.more", target="fetch", max_iterations=2)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    for _ in range(3):
        d.ok("fetch", {"more": True})
    assert d.status == "failed"
    assert d.step("again").status == "failed"
    assert d.state.error is not None
    assert "2 iterations" in d.state.error["message"]
    assert len(d.items("workflow.step.loop")) == 2
    assert len(d.items("workflow.step.started", "fetch")) == 3


def test_a_loop_body_sees_the_latest_result_of_every_body_step_even_after_a_retry() -> None:
    wf = (
        workflow("loop")
        .task("add", "noop", input="${{ steps.add }}")
        .task("check", "noop", input="${{ [steps.add, steps.check] }}")
        .loop("again", condition="check.more", target="add", interval="1m", max_iterations=9)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    assert d.step("add").input is None  # nothing yet on the first pass
    d.ok("add", {"n": 1})
    assert d.step("check").input == [{"n": 1}, None]
    d.ok("check", {"more": True, "seen": 1})
    d.tick(after=60)
    assert d.step("add").input == {"n": 1}  # its own result of the previous pass
    assert d.state.latest == {"add": {"n": 1}}  # check and the loop are still completed
    d.fail("add", retryable=False)
    assert d.status == "failed"
    d.retry()
    assert d.step("add").input == {"n": 1}  # still the latest after a failure and a retry
    d.ok("add", {"n": 2})
    assert d.step("check").input == [{"n": 2}, {"more": True, "seen": 1}]
    d.ok("check", {"more": False})
    assert d.status == "completed"
    assert d.state.latest == {}  # every body step completed again: nothing kept twice


def test_loop_with_an_interval_waits_between_iterations() -> None:
    wf = (
        workflow("loop")
        .task("check", "noop")
        .loop("again", condition="!prev.ready", target="check", interval="1h", max_iterations=9)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("check", {"ready": False})
    assert d.step("again").status == "waiting"
    assert d.runnable == []
    assert d.wake == at(hours=1)
    assert d.tick(at(minutes=59)).history == []
    d.tick(at(hours=1))
    assert d.runnable == ["check"]
    d.ok("check", {"ready": True})
    assert d.status == "completed"
    assert d.state.output == {"ready": True}


def test_loop_timeout_fails_the_loop_and_survives_a_restore() -> None:
    wf = (
        workflow("loop")
        .task("check", "noop")
        .loop("again", condition="!prev.ready", target="check", interval="1h", timeout="90m")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("check", {"ready": False})  # first pass at T0
    d.tick(at(hours=1))
    d.state = round_trip(d.state)
    d.ok("check", {"ready": False})  # 1h < 90m: wait again
    assert d.step("again").status == "waiting"
    d.tick(at(hours=2))
    d.state = round_trip(d.state)
    d.ok("check", {"ready": False})
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "StepTimeoutError"
    assert "timeout" in d.state.error["message"]


def test_the_state_column_stays_the_same_size_however_many_steps_finish() -> None:
    """The state column is rewritten on every commit: it keeps what running and undoable
    steps need, not a record of every completion (a loop of n iterations made each commit
    carry n entries, and a long workflow each of its finished steps' ``prev``)."""
    wf = (
        workflow("long")
        .task("charge", "noop", compensate="refund")
        .task("fetch", "noop")
        .task("store", "noop")
        .loop("again", condition="prev.more", target="charge", max_iterations=500)
        .task("after", "noop")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    sizes = []
    for page in range(200):
        d.ok("charge", {"page": page})
        d.ok("fetch", {"page": page})
        d.ok("store", {"more": page < 199})
        sizes.append(len(json.dumps(d.state.frontier_json())))
    assert d.runnable == ["after"]
    assert d.state.order == ["charge"]  # once, at its latest completion
    # the last pass left the loop; from the second on, the state also holds the previous
    # output of the one step running again (``State.latest``), a constant
    looping = sizes[1:-1]
    assert max(looping) - min(looping) < 16  # the iteration counter's digits, nothing per pass
    assert set(d.state.frontier_json()["extra"]) == {"after"}  # the step still running
    assert d.step("fetch").prev is None  # dropped in memory too: a restored state is equal
    d.fail("after", retryable=False)
    assert d.status == "compensating"
    # undone once, not once per iteration
    assert d.items("workflow.compensating")[0].data["steps"] == ["charge"]


def test_loop_over_pure_steps_runs_in_one_decision() -> None:
    wf = (
        workflow("count")
        .pass_("inc", transform=lambda ctx: {"n": ctx.prev["n"] + 1})
        .loop("again", condition="prev.n < 2000", target="inc", max_iterations=5000)
        .build()
    )
    d = Driver(wf, {"n": 0})
    d.start()
    assert d.status == "completed"
    assert d.state.output == {"n": 2000}


def test_a_pure_loop_that_never_ends_fails_instead_of_spinning() -> None:
    wf = (
        workflow("spin")
        .pass_("a")
        .loop("again", condition="true", target="a", timeout="1h")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "NoProgress"


def test_a_loop_may_target_itself() -> None:
    wf = (
        workflow("self")
        .task("a", "noop")
        .loop("again", condition="input.go", target="again", interval="1m", max_iterations=2)
        .build()
    )
    d = Driver(wf, {"go": True})
    d.start()
    d.ok("a", "A")
    d.tick(after=60)
    d.tick(after=60)
    assert d.status == "failed"
    assert d.step("again").prev == "a"


# -- workflow timeout ------------------------------------------------------------------------


def test_workflow_timeout_cancels_active_steps() -> None:
    wf = workflow("to").timeout("1h").task("a", "noop").wait("w", duration="2h").build()
    d = Driver(wf, {})
    d.start()
    assert d.state.deadline == at(hours=1)
    assert d.wake == at(hours=1)
    d.ok("a", 1)
    assert d.wake == at(hours=1)
    d.tick(at(minutes=59))
    assert d.status == "waiting"
    d.tick(at(hours=1))
    assert d.status == "timed_out"
    assert d.step("w").status == "cancelled"
    assert d.state.error is not None
    assert d.state.error["type"] == "WorkflowTimeout"
    assert d.types()[-1] == "workflow.timed_out"
    assert d.wake is None
    assert d.tick(at(hours=5)).history == []


def test_workflow_timeout_while_a_task_runs_ignores_its_late_result() -> None:
    wf = workflow("to").timeout("30m").task("a", "noop").task("b", "noop").build()
    d = Driver(wf, {})
    d.start()
    d.tick(at(minutes=30))
    assert d.status == "timed_out"
    assert d.step("a").status == "cancelled"
    late = d.ok("a", 1)
    assert late.history == []
    assert d.status == "timed_out"
