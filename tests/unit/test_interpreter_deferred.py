"""``StepDeferred``: a step whose action is over its limit waits until the given time, gives
back the attempt its call would have used, and runs again when that time comes."""

from __future__ import annotations

from datetime import timedelta

from statemachine import RetryPolicy, workflow
from statemachine.runtime.interpreter import StepDeferred
from tests.unit.driver import Driver, at


def test_a_deferred_step_waits_then_runs_with_no_attempt_used() -> None:
    wf = workflow("limited").task("a", "send", retry=RetryPolicy(max_attempts=2)).build()
    d = Driver(wf)
    d.start()
    assert d.runnable == ["a"] and d.step("a").attempts == 1
    until = at(seconds=5)
    decision = d.send(StepDeferred("a", until))
    assert [h.type for h in decision.history] == ["workflow.step.throttled"]
    assert d.status == "waiting" and d.runnable == []
    assert d.step("a").status == "waiting" and d.step("a").attempts == 0
    assert d.wake == until
    d.tick(at=until - timedelta(seconds=1))
    assert d.runnable == []
    d.tick(at=until)
    assert d.runnable == ["a"] and d.step("a").attempts == 1
    d.send(StepDeferred("a", at(seconds=9)))  # deferred again: still no attempt used
    d.tick(at=at(seconds=9))
    assert d.step("a").attempts == 1
    d.ok("a", {"sent": True})
    assert d.status == "completed" and d.step("a").attempts == 1


def test_a_deferral_of_a_step_not_running_changes_nothing() -> None:
    wf = workflow("limited").task("a", "send").wait("w", duration="1h").build()
    d = Driver(wf)
    d.start()
    d.ok("a")
    decision = d.send(StepDeferred("a", at(seconds=5)))  # late: a completed already
    assert decision.history == [] and d.step("a").status == "completed"


def test_history_says_once_per_call_held_back_not_at_every_recheck() -> None:
    wf = workflow("limited").task("a", "send", retry=RetryPolicy(max_attempts=3)).build()
    d = Driver(wf)
    d.start()
    for second in range(1, 6):  # a full slot, asked again every so often
        d.send(StepDeferred("a", at(seconds=second)))
        d.tick(at=at(seconds=second))
    assert d.types("a").count("workflow.step.throttled") == 1
    assert d.step("a").attempts == 1
    d.fail("a")  # the call ran and failed: its retry, held back, is a new wait to record
    d.tick(at=d.wake)
    d.send(StepDeferred("a", at(seconds=60)))
    d.tick(at=at(seconds=60))
    d.send(StepDeferred("a", at(seconds=61)))
    assert d.types("a").count("workflow.step.throttled") == 2
