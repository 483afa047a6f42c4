"""Versions, per-workflow concurrency limits and callbacks/subscriptions on real databases."""

from __future__ import annotations

import gc
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from statemachine import Engine, StepContext, branch, load_yaml, when, workflow
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


# -- versioning ----------------------------------------------------------------------------

V1 = """
id: onboarding
version: 1
steps:
  - id: create
    action: createAccount
  - id: cool-off
    type: wait
    duration: 1h
  - id: welcome
    action: sendWelcome
"""

V2 = """
id: onboarding
version: 2
steps:
  - id: create
    action: createAccount
  - id: cool-off
    type: wait
    duration: 1h
  - id: survey
    action: sendSurvey
  - id: welcome
    action: sendWelcome
"""


def _actions(engine: Engine, ran: list[str]) -> None:
    for name in ("createAccount", "sendSurvey", "sendWelcome"):

        def handler(data: Any, ctx: StepContext, name: str = name) -> str:
            ran.append(f"{ctx.instance_id}:{name}")
            return name

        engine.action(name)(handler)


def test_running_instances_keep_their_version(db_url: str) -> None:
    ran: list[str] = []
    clock = ManualClock(START)
    v1, v2 = load_yaml(V1), load_yaml(V2)
    assert v1.hash != v2.hash

    first = Engine(db_url, clock=clock)
    try:
        _actions(first, ran)
        first.register(v1)
        old = first.execute("onboarding", {"user": "ada"}, instance_id="old")
        assert old.status == "waiting"
        assert old.definition_hash == v1.hash
    finally:
        first.close()
        gc.collect()

    second = Engine(db_url, clock=clock)
    try:
        _actions(second, ran)
        second.register(load_yaml(V2))  # a changed definition, same name, in a new process
        clock.advance("1h")
        second.run_due()
        old = second.get("old")
        assert old.status == "completed"
        assert old.workflow_version == "1"
        assert old.definition_hash == v1.hash
        assert set(old.step_results) == {"create", "cool-off", "welcome"}
        assert old.output == "sendWelcome"
        assert ran == ["old:createAccount", "old:sendWelcome"]

        new = second.execute("onboarding", {"user": "bob"}, instance_id="new")
        assert new.workflow_version == "2"
        assert new.definition_hash == v2.hash
        clock.advance("1h")
        second.run_due()
        new = second.get("new")
        assert new.status == "completed"
        assert set(new.step_results) == {"create", "cool-off", "survey", "welcome"}
        assert ran[2:] == ["new:createAccount", "new:sendSurvey", "new:sendWelcome"]

        # registering the identical definition again is a no-op
        again = load_yaml(V2)
        assert again.hash == v2.hash
        second.register(again)
        second.register(again)
        third = second.execute("onboarding", {"user": "cy"})
        assert third.definition_hash == v2.hash
        assert third.workflow_version == "2"
        assert second.get("old").definition_hash == v1.hash
    finally:
        second.close()
        gc.collect()


# -- per-workflow concurrency --------------------------------------------------------------


def test_max_concurrent_keeps_the_second_instance_pending(
    engine: Engine, clock: ManualClock
) -> None:
    ran: list[str] = []
    engine.register(
        workflow("exclusive")
        .task("begin", lambda x, ctx: ran.append(f"begin:{ctx.instance_id}"))
        .wait("hold", duration="1h")
        .task("end", lambda x, ctx: ran.append(f"end:{ctx.instance_id}"))
        .build(),
        max_concurrent=1,
    )
    a = engine.start("exclusive", {}, instance_id="a")
    b = engine.start("exclusive", {}, instance_id="b")
    engine.run_due()
    statuses = {i: engine.get(i).status for i in (a, b)}
    assert sorted(statuses.values()) == ["pending", "waiting"]
    first = next(i for i, s in statuses.items() if s == "waiting")
    second = b if first == a else a
    assert ran == [f"begin:{first}"]
    engine.run_due()  # still held back
    assert engine.get(second).status == "pending"

    clock.advance("1h")
    engine.run_due()
    assert engine.get(first).status == "completed"
    assert engine.get(second).status == "waiting"  # it ran as soon as the first completed
    assert ran == [f"begin:{first}", f"end:{first}", f"begin:{second}"]

    clock.advance("1h")
    engine.run_due()
    assert engine.get(second).status == "completed"
    assert ran[-1] == f"end:{second}"


def test_max_concurrent_with_execute_and_cancel(engine: Engine) -> None:
    engine.register(workflow("solo").wait("w", duration="1h").build(), max_concurrent=1)
    first = engine.execute("solo", {})
    second = engine.execute("solo", {})
    assert first.status == "waiting"
    assert second.status == "pending"
    engine.cancel(first.id)  # a cancelled instance frees its slot
    engine.run_due()
    assert engine.get(second.id).status == "waiting"


def test_max_concurrent_two_of_five(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("pair").task("x", lambda x: 1).wait("w", duration="1h").build(),
        max_concurrent=2,
    )
    ids = [engine.start("pair", {}) for _ in range(5)]
    engine.run_due()
    assert Counter(engine.get(i).status for i in ids) == Counter({"waiting": 2, "pending": 3})
    for _ in range(3):
        clock.advance("1h")
        engine.run_due()
        active = sum(engine.get(i).status == "waiting" for i in ids)
        assert active <= 2
    assert Counter(engine.get(i).status for i in ids) == Counter({"completed": 5})


# -- callbacks and subscriptions -----------------------------------------------------------


def test_on_complete_runs_exactly_once_per_instance(engine: Engine, clock: ManualClock) -> None:
    seen: list[tuple[str, str]] = []

    def fragile(data: Any) -> Any:
        if data.get("fail"):
            raise RuntimeError("nope")
        return data

    engine.register(
        workflow("notified")
        .task("work", fragile)
        .wait("hold", duration="1m")
        .pass_("done", result={"ok": True})
        .on_complete(lambda inst: seen.append((inst.id, inst.status)))
        .build()
    )
    ok = engine.execute("notified", {}, instance_id="ok")
    bad = engine.execute("notified", {"fail": True}, instance_id="bad")
    assert ok.status == "waiting" and bad.status == "failed"
    assert seen == [("bad", "failed")]
    for _ in range(3):
        clock.advance("1m")
        engine.run_due()
    assert engine.get("ok").status == "completed"
    assert Counter(seen) == Counter({("bad", "failed"): 1, ("ok", "completed"): 1})


def test_progress_events_go_from_0_to_100(engine: Engine, clock: ManualClock) -> None:
    progress: list[dict[str, Any]] = []
    engine.on("workflow.progress", progress.append)
    engine.register(
        workflow("stages")
        .task("one", lambda x: 1)
        .task("two", lambda x: 2)
        .wait("three", duration="1m")
        .task("four", lambda x: 4)
        .build()
    )
    inst = engine.execute("stages", {})
    clock.advance("1m")
    engine.run_due()
    assert engine.get(inst.id).status == "completed"
    assert progress, "no workflow.progress event"
    assert all(e["type"] == "workflow.progress" for e in progress)
    assert all(e["instance_id"] == inst.id for e in progress)
    values = [e["progress"] for e in progress]
    assert all(isinstance(v, int) and 0 <= v <= 100 for v in values), values
    assert values == sorted(values), values
    assert values[-1] == 100
    assert len(set(values)) >= 3, values  # it moved step by step, not only at the end


def test_step_pattern_receives_step_events_only(engine: Engine) -> None:
    step_events: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    engine.on("workflow.step.*", step_events.append)
    engine.on("*", everything.append)

    def shout(data: Any, ctx: StepContext) -> str:
        ctx.emit("custom.thing", {"x": 1})
        return "ok"

    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    engine.register(
        workflow("noisy")
        .task("shout", shout)
        .task("oops", broken, on_error="continue")
        .pass_("done")
        .build()
    )
    inst = engine.execute("noisy", {})
    assert inst.status == "completed"

    types = [e["type"] for e in step_events]
    assert types, "no step events"
    assert all(t.startswith("workflow.step.") for t in types), types
    assert {"workflow.step.started", "workflow.step.completed", "workflow.step.failed"} <= set(
        types
    )
    assert {e["step"] for e in step_events} == {"shout", "oops", "done"}
    all_types = {e["type"] for e in everything}
    assert {"workflow.started", "workflow.completed", "custom.thing"} <= all_types
    assert [e for e in everything if e["type"].startswith("workflow.step.")] == step_events


def _progress_of(engine: Engine) -> list[int]:
    values: list[int] = []
    engine.on("workflow.progress", lambda e: values.append(e["progress"]))
    return values


def test_progress_with_a_loop_a_choice_and_a_parallel(engine: Engine) -> None:
    values = _progress_of(engine)
    count = {"n": 0}

    def inc(data: Any) -> int:
        count["n"] += 1
        return count["n"]

    engine.register(
        [
            workflow("looping")
            .task("a", lambda x: 0)
            .task("b", inc)
            .loop("again", condition=lambda ctx: ctx.prev < 3, target="b", max_iterations=10)
            .task("c", lambda x: "c")
            .build(),
            workflow("choosing")
            .choice("pick", choices=[when(lambda ctx: True, next="z")], default="y")
            .task("y", lambda x: 1)
            .task("z", lambda x: 2)
            .build(),
            workflow("fanning")
            .task("a", lambda x: 1)
            .parallel("fan", branches=[branch("x").task("t", lambda x: 1).build()])
            .build(),
        ]
    )
    for name in ("looping", "choosing", "fanning"):
        values.clear()
        assert engine.execute(name, {}).status == "completed"
        assert values == sorted(values), (name, values)
        assert values[-1] == 100 and values.count(100) == 1, (name, values)


def test_step_events_from_branches_carry_their_paths(engine: Engine) -> None:
    events: list[dict[str, Any]] = []
    engine.on("workflow.step.*", events.append)
    engine.register(
        workflow("fan-events")
        .parallel("fan", branches=[branch("a").task("t", lambda x: 1).build()])
        .build()
    )
    inst = engine.execute("fan-events", {})
    assert {e["step"] for e in events} == {"fan", "fan/a/t"}
    assert all(e["instance_id"] == inst.id and e["workflow_name"] == "fan-events" for e in events)
