"""Control calls on real databases: pause/resume, cancel, retry, replay, unknown ids."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import (
    Engine,
    InstanceNotFound,
    InvalidTransition,
    LoopLimitExceeded,
    StatemachineError,
    StepContext,
    branch,
    load_yaml,
    workflow,
)
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


class Calls:
    """Handlers that count their calls; a step in ``broken`` raises until it is removed."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.broken: set[str] = set()

    def step(self, name: str) -> Callable[..., Any]:
        def handler(data: Any, ctx: StepContext) -> Any:
            self.count[name] += 1
            if name in self.broken:
                raise RuntimeError(f"{name} is broken")
            return {name: data}

        return handler


def _types(engine: Engine, iid: str) -> list[str]:
    return [h.type for h in engine.history(iid)]


# -- pause / resume ------------------------------------------------------------------------


def test_pause_holds_a_due_timer_until_resume(engine: Engine, clock: ManualClock) -> None:
    calls = Calls()
    engine.register(
        workflow("nap")
        .task("before", calls.step("before"))
        .wait("sleep", duration="1h")
        .task("after", calls.step("after"))
        .build()
    )
    inst = engine.execute("nap", {"x": 1})
    assert inst.status == "waiting"
    engine.pause(inst.id)
    assert engine.get(inst.id).status == "paused"
    clock.advance("1h")  # the timer falls due during the pause
    assert engine.run_due() == 0
    clock.advance("1h")
    assert engine.run_due() == 0
    assert calls.count == Counter({"before": 1})
    inst = engine.get(inst.id)
    assert inst.status == "paused"
    assert inst.step_results["sleep"].status == "waiting"

    engine.resume(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls.count == Counter({"before": 1, "after": 1})
    types = _types(engine, inst.id)
    assert types.index("workflow.paused") < types.index("workflow.resumed")
    with pytest.raises(InvalidTransition):
        engine.resume(inst.id)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_a_waiting_instance(engine: Engine, clock: ManualClock) -> None:
    calls = Calls()
    engine.register(
        workflow("cancellable")
        .task("before", calls.step("before"))
        .wait("sleep", duration="1h")
        .task("after", calls.step("after"))
        .build()
    )
    inst = engine.execute("cancellable", {})
    assert inst.status == "waiting"
    engine.cancel(inst.id)
    inst = engine.get(inst.id)
    assert inst.status == "cancelled"
    assert inst.step_results["sleep"].status == "cancelled"
    assert "workflow.cancelled" in _types(engine, inst.id)
    clock.advance("2h")
    assert engine.run_due() == 0
    assert calls.count == Counter({"before": 1})
    assert engine.get(inst.id).status == "cancelled"


def test_cancel_a_completed_instance_is_refused(engine: Engine) -> None:
    engine.register(workflow("done").task("t", lambda x: x).build())
    inst = engine.execute("done", {"a": 1})
    assert inst.status == "completed"
    with pytest.raises(InvalidTransition):
        engine.cancel(inst.id)
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"a": 1}
    assert "workflow.cancelled" not in _types(engine, inst.id)


# -- retry ---------------------------------------------------------------------------------


def test_retry_continues_from_the_failed_step(engine: Engine) -> None:
    calls = Calls()
    calls.broken.add("charge")
    engine.register(
        workflow("order")
        .task("validate", calls.step("validate"))
        .task("reserve", calls.step("reserve"))
        .task("charge", calls.step("charge"))
        .task("ship", calls.step("ship"))
        .build()
    )
    inst = engine.execute("order", {"id": 1})
    assert inst.status == "failed"
    assert inst.step_results["charge"].status == "failed"
    assert calls.count == Counter({"validate": 1, "reserve": 1, "charge": 1})

    calls.broken.clear()  # the flag flips
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls.count == Counter({"validate": 1, "reserve": 1, "charge": 2, "ship": 1})
    assert inst.output == {"ship": {"charge": {"reserve": {"validate": {"id": 1}}}}}
    with pytest.raises(InvalidTransition):
        engine.retry(inst.id)


def test_retry_reruns_only_the_failed_branch(engine: Engine) -> None:
    calls = Calls()
    calls.broken.add("notify")
    engine.register(
        workflow("fanout")
        .task("prepare", calls.step("prepare"))
        .parallel(
            "fulfill",
            failure="wait-all",
            branches=[
                branch("shipping").task("ship", calls.step("ship")).build(),
                branch("notification").task("notify", calls.step("notify")).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("fanout", "x")
    assert inst.status == "failed"
    assert inst.step_results["fulfill/shipping/ship"].status == "completed"

    calls.broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls.count == Counter({"prepare": 1, "ship": 1, "notify": 2})
    assert inst.output == {
        "shipping": {"ship": {"prepare": "x"}},
        "notification": {"notify": {"prepare": "x"}},
    }


# -- replay --------------------------------------------------------------------------------


def test_replay_uses_the_same_input_and_definition(engine: Engine) -> None:
    calls = Calls()
    v1 = workflow("replayable", version="1").task("a", calls.step("a")).build()
    v2 = (
        workflow("replayable", version="2")
        .task("a", calls.step("a"))
        .task("b", calls.step("b"))
        .build()
    )
    engine.register(v1)
    original = engine.execute("replayable", {"order": 42})
    assert original.status == "completed"
    assert original.definition_hash == v1.hash
    engine.register(v2)  # a newer version does not change what a replay runs

    new_id = engine.replay(original.id)

    assert new_id != original.id
    engine.run_due()
    replayed = engine.get(new_id)
    assert replayed.status == "completed"
    assert replayed.input == {"order": 42}
    assert replayed.definition_hash == original.definition_hash == v1.hash
    assert replayed.workflow_version == "1"
    assert set(replayed.step_results) == {"a"}
    assert calls.count == Counter({"a": 2})
    assert engine.get(original.id).output == {"a": {"order": 42}}


def test_replay_of_a_waiting_instance(engine: Engine) -> None:
    engine.register(workflow("sleepy").wait("w", duration="1h").build())
    inst = engine.execute("sleepy", {"a": 1})
    assert inst.status == "waiting"
    new_id = engine.replay(inst.id)
    replayed = engine.get(new_id)
    assert replayed.input == {"a": 1}
    assert replayed.definition_hash == inst.definition_hash
    assert engine.get(inst.id).status == "waiting"  # the original is untouched


def test_retry_of_nested_parallels(engine: Engine) -> None:
    calls = Calls()
    calls.broken.add("deep")
    engine.register(
        workflow("nested-retry")
        .parallel(
            "outer",
            failure="wait-all",
            branches=[
                branch("o")
                .parallel(
                    "inner",
                    failure="wait-all",
                    branches=[
                        branch("i1").task("t", calls.step("deep")).build(),
                        branch("i2").task("t", calls.step("sibling")).build(),
                    ],
                )
                .build(),
                branch("p").task("t", calls.step("other")).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("nested-retry", 0)
    assert inst.status == "failed"
    calls.broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls.count == Counter({"deep": 2, "sibling": 1, "other": 1})
    assert inst.output == {"o": {"i1": {"deep": 0}, "i2": {"sibling": 0}}, "p": {"other": 0}}


def test_pause_holds_branch_timers(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("paused-fan")
        .parallel(
            "fan",
            branches=[
                branch("a").wait("w", duration="1h").task("t", lambda x: "a").build(),
                branch("b").wait("w", duration="2h").task("t", lambda x: "b").build(),
            ],
        )
        .build()
    )
    inst = engine.execute("paused-fan", {})
    engine.pause(inst.id)
    clock.advance("3h")
    assert engine.run_due() == 0
    assert "fan/a/t" not in engine.get(inst.id).step_results
    engine.resume(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"a": "a", "b": "b"}


# -- unknown ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda e, i: e.get(i), id="get"),
        pytest.param(lambda e, i: e.history(i), id="history"),
        pytest.param(lambda e, i: e.pause(i), id="pause"),
        pytest.param(lambda e, i: e.resume(i), id="resume"),
        pytest.param(lambda e, i: e.cancel(i), id="cancel"),
        pytest.param(lambda e, i: e.retry(i), id="retry"),
        pytest.param(lambda e, i: e.replay(i), id="replay"),
        pytest.param(lambda e, i: e.send_event(i, "go", {}), id="send_event"),
        pytest.param(lambda e, i: e.update_metadata(i, {"k": "v"}), id="update_metadata"),
    ],
)
def test_control_calls_on_an_unknown_id(engine: Engine, call: Callable[[Engine, str], Any]) -> None:
    engine.register(workflow("w").task("t", lambda x: x).build())
    with pytest.raises(InstanceNotFound):
        call(engine, "does-not-exist")
    assert engine.list() == []


# -- loops ---------------------------------------------------------------------------------


def test_a_loop_body_sees_its_own_latest_result(engine: Engine) -> None:
    wf = (
        workflow("counter")
        .task(
            "increment",
            handler=lambda i, c: {"count": (c.steps.get("increment") or {"count": 0})["count"] + 1},
        )
        .loop(
            "repeat",
            condition=lambda c: c.steps["increment"]["count"] < 3,
            target="increment",
            max_iterations=10,
        )
        .build()
    )
    engine.register(wf)
    inst = engine.execute("counter", {})
    assert inst.status == "completed", inst.error
    assert inst.step_results["increment"].output == {"count": 3}
    assert inst.step_results["increment"].iteration == 2
    assert inst.output == {"count": 3}


def test_every_body_step_sees_the_latest_of_every_body_step_in_yaml(engine: Engine) -> None:
    seen: list[Any] = []

    def record(data: Any, ctx: StepContext) -> Any:
        seen.append((data, dict(ctx.steps)))
        return {"total": data["count"]}

    engine.action("record")(record)
    engine.register(
        load_yaml(
            """
id: yaml-counter
steps:
  - id: increment
    type: pass
    result:
      count: '${{ (steps.increment || {"count": 0}).count + 1 }}'
      after: '${{ (steps.report || {"total": 0}).total }}'
  - id: report
    action: record
    params:
      count: ${{ steps.increment.count }}
      before: ${{ steps.report }}
  - id: repeat
    type: loop
    condition: increment.count < 3 && report.total === increment.count
    target: increment
    maxIterations: 10
"""
        )
    )
    inst = engine.execute("yaml-counter", {})
    assert inst.status == "completed", inst.error
    assert inst.step_results["increment"].output == {"count": 3, "after": 2}
    assert [data for data, _ in seen] == [
        {"count": 1, "before": None},
        {"count": 2, "before": {"total": 1}},  # its own result of the previous pass
        {"count": 3, "before": {"total": 2}},
    ]
    assert seen[1][1]["report"] == {"total": 1}
    assert seen[1][1]["increment"] == {"count": 2, "after": 1}


def test_a_loop_past_max_iterations_fails_with_loop_limit_exceeded(engine: Engine) -> None:
    engine.register(
        workflow("forever")
        .task("spin", lambda data: {"more": True})
        .loop("again", condition="prev.more", target="spin", max_iterations=2)
        .build()
    )
    inst = engine.execute("forever", {})
    assert inst.status == "failed"
    assert inst.error is not None
    assert inst.error["type"] == "LoopLimitExceeded"
    assert inst.error["step"] == "again"
    assert "2 iterations" in inst.error["message"]
    assert issubclass(LoopLimitExceeded, StatemachineError)
    assert LoopLimitExceeded.__name__ == inst.error["type"]


def test_a_loop_body_sees_its_latest_result_after_a_restart(
    db_url: str, clock: ManualClock
) -> None:
    def counter() -> Any:
        return (
            workflow("slow-counter")
            .task(
                "increment",
                handler=lambda i, c: {"count": (c.steps.get("increment") or {"count": 0})["count"] + 1},
            )
            .loop("repeat", condition="increment.count < 3", target="increment", interval="1h",
                  max_iterations=10)
            .build()
        )  # fmt: skip

    first = Engine(db_url, clock=clock)
    try:
        first.register(counter())
        iid = first.execute("slow-counter", {}).id
        assert first.get(iid).status == "waiting"
    finally:
        first.close()
    for _ in range(2):  # every pass in a new engine: what it sees comes from the database
        clock.advance("1h")
        engine = Engine(db_url, clock=clock)
        try:
            engine.register(counter())
            engine.run_due()
            inst = engine.get(iid)
        finally:
            engine.close()
    assert inst.status == "completed", inst.error
    assert inst.output == {"count": 3}
