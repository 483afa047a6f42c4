"""Control of running instances: events, pause/resume, cancel, retry, replay, versions, callbacks."""

from __future__ import annotations

import gc
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import Engine, InvalidTransition, StepContext, WorkflowDefinition, workflow
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


class Calls:
    """Handlers that count how often each step ran."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.fail: set[str] = set()

    def step(self, name: str) -> Any:
        def handler(data: Any, ctx: StepContext) -> dict[str, Any]:
            self.count[name] += 1
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            return {name: self.count[name]}

        return handler


def _types(engine: Engine, iid: str) -> list[str]:
    return [h.type for h in engine.history(iid)]


# -- events --------------------------------------------------------------------------------


def test_event_sent_before_the_instance_waits_is_kept(engine: Engine) -> None:
    calls = Calls()
    engine.register(
        workflow("approval")
        .task("prepare", calls.step("prepare"))
        .wait("approved", event="approved")
        .task("ship", lambda data, ctx: {"shipped_by": ctx.steps["approved"]["by"]})
        .build()
    )
    iid = engine.start("approval", {}, instance_id="ap-1")
    engine.send_event(iid, "approved", {"by": "boss"})  # nothing runs yet: buffered
    assert engine.get(iid).status == "pending"
    assert calls.count["prepare"] == 0
    engine.run_due()
    inst = engine.get(iid)
    assert inst.status == "completed"
    assert inst.step_results["approved"].output == {"by": "boss"}
    assert inst.output == {"shipped_by": "boss"}


def test_event_sent_during_an_earlier_timer_is_kept(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("timer-then-event")
        .wait("cool-off", duration="1h")
        .wait("signed", event="signed")
        .pass_("done", transform=lambda ctx: ctx.steps["signed"])
        .build()
    )
    inst = engine.execute("timer-then-event", {})
    assert inst.status == "waiting"
    engine.send_event(inst.id, "signed", {"doc": 7})
    engine.send_event(inst.id, "unrelated", {"x": 1})
    clock.advance("1h")
    engine.run_due()
    clock.advance("1m")
    engine.run_due()  # a second chance: still nothing
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"doc": 7}


def test_event_delivered_to_a_waiting_instance(engine: Engine) -> None:
    engine.register(workflow("waiter").wait("go", event="go").build())
    inst = engine.execute("waiter", {})
    assert inst.status == "waiting"
    engine.run_due()
    assert engine.get(inst.id).status == "waiting"
    engine.send_event(inst.id, "go", [1, 2])
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == [1, 2]


def test_each_event_is_consumed_once(engine: Engine) -> None:
    engine.register(
        workflow("two-waits").wait("first", event="tick").wait("second", event="tick").build()
    )
    inst = engine.execute("two-waits", {})
    engine.send_event(inst.id, "tick", 1)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "waiting"
    assert inst.step_results["first"].output == 1
    engine.send_event(inst.id, "tick", 2)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == 2


def test_emit_starts_triggered_workflows(engine: Engine) -> None:
    engine.register(
        workflow("on-signup").trigger("User.created").task("hello", lambda x: x["name"]).build()
    )
    engine.register(
        workflow("on-upgrade")
        .trigger("User.upgraded", condition='plan === "enterprise"')
        .task("vip", lambda x: x["plan"])
        .build()
    )
    assert engine.emit("Nobody.cares", {}) == []
    assert engine.emit("User.upgraded", {"plan": "free"}) == []
    [a] = engine.emit("User.created", {"name": "ada"})
    [b] = engine.emit("User.upgraded", {"plan": "enterprise"})
    engine.run_due()
    assert engine.get(a).output == "ada"
    assert engine.get(b).output == "enterprise"
    assert len(engine.list()) == 2


# -- pause / resume ------------------------------------------------------------------------


def test_no_step_starts_while_paused(engine: Engine, clock: ManualClock) -> None:
    calls = Calls()
    engine.register(workflow("p1").task("a", calls.step("a")).task("b", calls.step("b")).build())
    iid = engine.start("p1", {}, instance_id="p1-1")
    engine.pause(iid)
    assert engine.get(iid).status == "paused"
    clock.advance("1h")
    assert engine.run_due() == 0
    assert calls.count == Counter()
    assert engine.get(iid).status == "paused"
    with pytest.raises(InvalidTransition):
        engine.pause(iid)
    engine.resume(iid)
    assert engine.get(iid).status in ("pending", "running")
    engine.run_due()
    inst = engine.get(iid)
    assert inst.status == "completed"
    assert calls.count == Counter({"a": 1, "b": 1})
    types = _types(engine, iid)
    assert types.index("workflow.paused") < types.index("workflow.resumed")


def test_timer_due_during_pause_runs_on_resume(engine: Engine, clock: ManualClock) -> None:
    calls = Calls()
    engine.register(
        workflow("p2")
        .task("a", calls.step("a"))
        .wait("nap", duration="1h")
        .task("b", calls.step("b"))
        .build()
    )
    inst = engine.execute("p2", {})
    assert inst.status == "waiting"
    engine.pause(inst.id)
    clock.advance("2h")  # the timer falls due while paused
    assert engine.run_due() == 0
    assert calls.count == Counter({"a": 1})
    assert engine.get(inst.id).status == "paused"
    engine.resume(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls.count == Counter({"a": 1, "b": 1})


def test_event_sent_while_paused_is_delivered_after_resume(engine: Engine) -> None:
    engine.register(workflow("p3").wait("go", event="go").build())
    inst = engine.execute("p3", {})
    engine.pause(inst.id)
    engine.send_event(inst.id, "go", "yes")
    engine.run_due()
    assert engine.get(inst.id).status == "paused"
    engine.resume(inst.id)
    engine.run_due()
    assert engine.get(inst.id).status == "completed"
    assert engine.get(inst.id).output == "yes"


# -- cancel --------------------------------------------------------------------------------


def test_cancel_a_waiting_instance(engine: Engine, clock: ManualClock) -> None:
    calls = Calls()
    cancelled: list[dict[str, Any]] = []
    engine.on("workflow.cancelled", cancelled.append)
    engine.register(
        workflow("c1")
        .task("a", calls.step("a"))
        .wait("nap", duration="1h")
        .task("b", calls.step("b"))
        .build()
    )
    inst = engine.execute("c1", {})
    engine.cancel(inst.id)
    inst = engine.get(inst.id)
    assert inst.status == "cancelled"
    assert inst.completed_at is not None
    assert inst.step_results["nap"].status == "cancelled"
    assert inst.step_results["a"].status == "completed"
    clock.advance("2h")
    assert engine.run_due() == 0
    assert calls.count == Counter({"a": 1})
    assert len(cancelled) == 1
    assert _types(engine, inst.id).count("workflow.cancelled") == 1
    for call in (engine.cancel, engine.resume, engine.pause, engine.retry):
        with pytest.raises(InvalidTransition):
            call(inst.id)
    with pytest.raises(InvalidTransition):
        engine.send_event(inst.id, "x", {})
    assert engine.get(inst.id).status == "cancelled"


def test_cancel_a_pending_and_a_paused_instance(engine: Engine) -> None:
    calls = Calls()
    engine.register(workflow("c2").task("a", calls.step("a")).build())
    one = engine.start("c2", {})
    two = engine.start("c2", {})
    engine.pause(two)
    engine.cancel(one)
    engine.cancel(two)
    engine.run_due()
    assert calls.count == Counter()
    assert engine.get(one).status == "cancelled"
    assert engine.get(two).status == "cancelled"
    assert {i.status for i in engine.list(status="cancelled")} == {"cancelled"}
    assert len(engine.list(status="cancelled")) == 2


# -- retry / replay ------------------------------------------------------------------------


def test_retry_continues_from_the_failed_step(engine: Engine) -> None:
    calls = Calls()
    calls.fail.add("b")
    engine.register(
        workflow("r1")
        .task("a", calls.step("a"))
        .task("b", calls.step("b"))
        .task("c", calls.step("c"))
        .build()
    )
    inst = engine.execute("r1", {"n": 1})
    assert inst.status == "failed"
    assert inst.step_results["b"].status == "failed"
    assert "c" not in inst.step_results or inst.step_results["c"].status == "pending"
    assert inst.error is not None

    calls.fail.clear()
    engine.retry(inst.id)
    assert engine.get(inst.id).status in ("running", "pending")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.error is None
    assert calls.count == Counter({"a": 1, "b": 2, "c": 1})
    assert inst.step_results["a"].output == {"a": 1}
    assert inst.step_results["b"].output == {"b": 2}
    assert inst.step_results["b"].attempts == 1  # retry resets the failed step's attempts
    assert inst.output == {"c": 1}
    types = _types(engine, inst.id)
    assert types.count("workflow.failed") == 1
    assert types[-1] == "workflow.completed"
    with pytest.raises(InvalidTransition):
        engine.retry(inst.id)


def test_retry_after_restart(db_url: str) -> None:
    calls = Calls()
    calls.fail.add("b")

    def flow() -> WorkflowDefinition:
        return workflow("r2").task("a", calls.step("a")).task("b", calls.step("b")).build()

    first = Engine(db_url, clock=ManualClock(START))
    try:
        first.register(flow())
        iid = first.execute("r2", {}).id
    finally:
        first.close()
        gc.collect()
    calls.fail.clear()
    second = Engine(db_url, clock=ManualClock(START))
    try:
        second.register(flow())
        second.retry(iid)
        second.run_due()
        assert second.get(iid).status == "completed"
        assert calls.count == Counter({"a": 1, "b": 2})
    finally:
        second.close()
        gc.collect()


def test_replay_creates_a_new_instance_with_the_same_input(engine: Engine) -> None:
    calls = Calls()
    engine.register(workflow("rp").task("a", calls.step("a")).build())
    original = engine.execute("rp", {"order": 42}, instance_id="rp-1")
    assert original.status == "completed"

    new_id = engine.replay("rp-1")
    assert new_id != "rp-1"
    engine.run_due()
    replayed = engine.get(new_id)
    assert replayed.status == "completed"
    assert replayed.input == {"order": 42}
    assert replayed.workflow_name == "rp"
    assert replayed.workflow_version == original.workflow_version
    assert replayed.output == {"a": 2}
    assert calls.count["a"] == 2
    assert engine.get("rp-1").output == {"a": 1}  # the original is untouched
    assert {i.id for i in engine.list()} == {"rp-1", new_id}


# -- versioning ----------------------------------------------------------------------------


def _versioned(version: str, last: str) -> WorkflowDefinition:
    return (
        workflow("versioned", version=version)
        .task("first", "stepFirst")
        .wait("nap", duration="1h")
        .task(last, "stepB" if last == "b" else "stepC")
        .build()
    )


def _actions(engine: Engine, ran: list[str]) -> None:
    def make(name: str) -> Any:
        def handler(data: Any, ctx: StepContext) -> str:
            ran.append(name)
            return name

        return handler

    for name in ("stepFirst", "stepB", "stepC"):
        engine.action(name)(make(name))


def test_instances_keep_the_version_they_started_with(db_url: str) -> None:
    ran: list[str] = []
    v1, v2 = _versioned("1", "b"), _versioned("2", "c")
    assert v1.hash != v2.hash

    first = Engine(db_url, clock=ManualClock(START))
    try:
        _actions(first, ran)
        first.register(v1)
        old = first.execute("versioned", {}, instance_id="old").id
        assert first.get(old).status == "waiting"
        first.register(v2)  # a changed definition under the same name
        new = first.execute("versioned", {}, instance_id="new").id
    finally:
        first.close()
        gc.collect()
    assert ran == ["stepFirst", "stepFirst"]

    clock = ManualClock(START)
    second = Engine(db_url, clock=clock)
    try:
        _actions(second, ran)
        second.register(v2)  # only the new version is registered in this process
        clock.advance("1h")
        second.run_due()
        old_inst, new_inst = second.get(old), second.get(new)
        assert old_inst.status == "completed"
        assert old_inst.workflow_version == "1"
        assert set(old_inst.step_results) == {"first", "nap", "b"}
        assert old_inst.output == "stepB"
        assert new_inst.status == "completed"
        assert new_inst.workflow_version == "2"
        assert set(new_inst.step_results) == {"first", "nap", "c"}
        assert sorted(ran) == sorted(["stepFirst", "stepFirst", "stepB", "stepC"])
        # a replay of the old instance runs the old version too
        again = second.replay(old)
        clock.advance("1h")
        second.run_due()
        second.run_due()
        assert second.get(again).workflow_version == "1"
        clock.advance("1h")
        second.run_due()
        assert second.get(again).output == "stepB"
    finally:
        second.close()
        gc.collect()


def test_reregistering_an_identical_definition_is_a_no_op(engine: Engine) -> None:
    ran: list[str] = []
    _actions(engine, ran)
    engine.register(_versioned("1", "b"))
    engine.register(_versioned("1", "b"))
    iid = engine.execute("versioned", {}).id
    assert engine.get(iid).workflow_version == "1"


# -- callbacks -----------------------------------------------------------------------------


def test_on_complete_runs_once(engine: Engine, clock: ManualClock) -> None:
    seen: list[tuple[str, str]] = []
    engine.register(
        workflow("cb")
        .task("a", lambda x: "a")
        .wait("nap", duration="1m")
        .task("b", lambda x: "b")
        .on_complete(lambda inst: seen.append((inst.id, inst.status)))
        .build()
    )
    inst = engine.execute("cb", {})
    assert seen == []
    clock.advance("1m")
    engine.run_due()
    clock.advance("1h")
    engine.run_due()
    assert seen == [(inst.id, "completed")]
    assert engine.get(inst.id).status == "completed"


def test_on_complete_runs_once_on_failure_and_a_failing_callback_is_harmless(
    engine: Engine,
) -> None:
    seen: list[str] = []

    def callback(inst: Any) -> None:
        seen.append(inst.status)
        raise RuntimeError("callback broke")

    def broken(data: Any) -> None:
        raise ValueError("nope")

    engine.register(workflow("cb2").task("a", broken).on_complete(callback).build())
    inst = engine.execute("cb2", {})
    engine.run_due()
    assert inst.status == "failed"
    assert seen == ["failed"]


def test_on_complete_runs_on_cancel(engine: Engine) -> None:
    seen: list[str] = []
    engine.register(
        workflow("cb3")
        .wait("w", event="never")
        .on_complete(lambda inst: seen.append(inst.status))
        .build()
    )
    inst = engine.execute("cb3", {})
    engine.cancel(inst.id)
    engine.run_due()
    assert seen == ["cancelled"]
