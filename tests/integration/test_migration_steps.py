"""Migration of instances caught mid-flight on every step type, on SQLite and Postgres: each
moves to a compatible version and completes there, or is blocked with the right reason and
left byte for byte as it was (API.md section 11)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from statemachine import CriticalError, Engine, WorkflowDefinition, branch, workflow
from statemachine.definition.builder import WorkflowBuilder
from statemachine.testing import ManualClock
from tests.integration.migration_support import migrated_entry, stored

Build = Callable[[str], WorkflowBuilder]


class Actions:
    """Handlers by name, so every version of a workflow finds them (``calls`` counts each)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail_first: set[str] = set()

    def _count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def register(self, engine: Engine) -> None:
        for name in ("work", "after", "other"):
            engine.action(name)(self._task(name))
        engine.action("flaky")(self._flaky)
        engine.action("check")(self._check)
        engine.action("counter")(self._counter)
        engine.action("undo")(self._undo)
        engine.action("boom")(self._boom)

    def _task(self, name: str) -> Callable[[Any], Any]:
        def run(data: Any) -> Any:
            self._count(name)
            return {"by": name}

        return run

    def _flaky(self, data: Any) -> Any:
        if self._count("flaky") == 1:
            raise RuntimeError("first try fails")
        return {"by": "flaky"}

    def _counter(self, data: Any) -> Any:
        return {"n": self._count("counter")}

    def _check(self, data: Any) -> Any:
        return {"done": self._count("check") > 1, "result": "ready"}

    def _undo(self, data: Any) -> Any:
        if self._count("undo") == 1:
            raise RuntimeError("the first undo fails")
        return {"undone": data}

    def _boom(self, data: Any) -> Any:
        raise CriticalError("boom")


RETRY = {"max_attempts": 3, "interval": 3600}


@dataclass
class Case:
    """One step type caught in flight: ``v1`` gets it there, ``ok`` is a version it can move to
    (``finish`` then drives it to its end), ``blocked`` one it cannot (``reason`` says why)."""

    name: str
    v1: Build
    ok: Build
    blocked: Build
    reason: str
    finish: Callable[[Engine, ManualClock, str], None]
    status: str = "completed"
    mapping: dict[str, str] = field(default_factory=dict)
    blocked_mapping: dict[str, str] = field(default_factory=dict)
    input: Any = None
    children: tuple[WorkflowDefinition, ...] = ()


def _due(engine: Engine, clock: ManualClock, step: str = "1h", times: int = 1) -> None:
    for _ in range(times):
        clock.advance(step)
        engine.run_due()
    engine.run_due()


def _event(name: str) -> Callable[[Engine, ManualClock, str], None]:
    def send(engine: Engine, clock: ManualClock, iid: str) -> None:
        engine.send_event(iid, name, {"ok": True})
        engine.run_due()

    return send


def _child_event(engine: Engine, clock: ManualClock, iid: str) -> None:
    children = engine.list(parent_id=iid)
    assert len(children) == 1
    engine.send_event(children[0].id, "go", {})
    for _ in range(3):
        engine.run_due()


CHILD = workflow("child").wait("hold", event="go").task("work", "work").build()
CHILD2 = workflow("child2").task("work", "work").build()

CASES = [
    Case(
        "retry backoff",
        lambda v: workflow("w", v).task("charge", "flaky", retry=RETRY),
        lambda v: workflow("w", v).task("charge", "flaky", retry=RETRY).task("after", "after"),
        lambda v: workflow("w", v).task("bill", "flaky", retry=RETRY),
        "step 'charge' is backing off before a retry and version 2 has no step 'charge'",
        lambda e, c, i: _due(e, c),
    ),
    Case(
        "retry backoff, input schema",
        lambda v: workflow("w", v).task("charge", "flaky", retry=RETRY),
        lambda v: workflow("w", v).task(
            "charge", "flaky", retry=RETRY, input_schema={"type": "object"}
        ),
        lambda v: workflow("w", v).task(
            "charge",
            "flaky",
            retry=RETRY,
            input_schema={"type": "object", "required": ["amount"]},
        ),
        "the input of step 'charge' does not match the input schema of 'charge' in version 2",
        lambda e, c, i: _due(e, c),
    ),
    Case(
        "wait timer",
        lambda v: workflow("w", v).wait("cool-off", duration="1h").task("work", "work"),
        lambda v: (
            workflow("w", v)
            .wait("cool-off", duration="1h")
            .task("work", "work")
            .task("after", "after")
        ),
        lambda v: workflow("w", v).task("cool-off", "work").task("work", "work"),
        "step 'cool-off' is a wait step waiting for its timer; 'cool-off' in version 2 is a task step",
        lambda e, c, i: _due(e, c),
    ),
    Case(
        "event wait",
        lambda v: workflow("w", v).wait("approval", event="approved").task("work", "work"),
        lambda v: workflow("w", v).wait("approve", event="approved").task("after", "after"),
        lambda v: workflow("w", v).wait("approval", event="signed").task("work", "work"),
        "step 'approval' waits for event 'approved'; in version 2 'approval' waits for event 'signed'",
        _event("approved"),
        mapping={"approval": "approve"},
    ),
    Case(
        "poll",
        lambda v: workflow("w", v).poll("ready", check="check", interval="1h", max_attempts=5),
        lambda v: (
            workflow("w", v)
            .poll("ready", check="check", interval="1h", max_attempts=5)
            .task("after", "after")
        ),
        lambda v: workflow("w", v).task("ready", "work"),
        "step 'ready' is a poll step polling; 'ready' in version 2 is a task step",
        lambda e, c, i: _due(e, c),
    ),
    Case(
        "loop",
        lambda v: (
            workflow("w", v)
            .task("count", "counter")
            .loop("again", condition="prev.n < 3", target="count", interval="1h", max_iterations=5)
        ),
        lambda v: (
            workflow("w", v)
            .task("count", "counter")
            .loop("again", condition="prev.n < 3", target="count", interval="1h", max_iterations=9)
            .task("after", "after")
        ),
        lambda v: (
            workflow("w", v)
            .task("first", "work")
            .task("count", "counter")
            .loop("again", condition="prev.n < 3", target="first", interval="1h", max_iterations=5)
        ),
        "loop 'again' is in flight going back to 'count'; in version 2 'again' goes back to 'first'",
        lambda e, c, i: _due(e, c, times=2),
    ),
    Case(
        "parallel",
        lambda v: workflow("w", v).parallel(
            "fan",
            branches=[
                branch("slow").wait("hold", duration="1h").build(),
                branch("quick").task("work", "work").build(),
            ],
        ),
        lambda v: (
            workflow("w", v)
            .parallel(
                "fan",
                branches=[
                    branch("slow").wait("hold", duration="1h").build(),
                    branch("quick").task("work", "work").build(),
                ],
            )
            .task("after", "after")
        ),
        lambda v: workflow("w", v).parallel(
            "fan",
            branches=[
                branch("late").wait("hold", duration="1h").build(),
                branch("quick").task("work", "work").build(),
            ],
        ),
        "parallel 'fan' has branch 'slow' running; in version 2 'fan' has no branch 'slow'",
        lambda e, c, i: _due(e, c),
    ),
    Case(
        "map",
        lambda v: workflow("w", v).map(
            "each", items="input.items", iterator=branch("it").wait("hold", duration="1h").build()
        ),
        lambda v: (
            workflow("w", v)
            .map(
                "each",
                items="input.items",
                iterator=branch("it").wait("hold", duration="1h").build(),
            )
            .task("after", "after")
        ),
        lambda v: workflow("w", v).map(
            "each", items="input.items", iterator=branch("item").wait("hold", duration="1h").build()
        ),
        "map 'each' has items in flight under iterator 'it'; in version 2 'each' iterates as 'item'",
        lambda e, c, i: _due(e, c),
        input={"items": [1, 2]},
    ),
    Case(
        "subworkflow",
        lambda v: workflow("w", v).subworkflow("sub", workflow="child"),
        lambda v: workflow("w", v).subworkflow("sub", workflow="child").task("after", "after"),
        lambda v: workflow("w", v).subworkflow("sub", workflow="child2"),
        "step 'sub' is waiting for its child (workflow 'child'); in version 2 'sub' starts workflow 'child2'",
        _child_event,
        children=(CHILD, CHILD2),
    ),
    Case(
        "compensating",
        lambda v: (
            workflow("w", v)
            .task("reserve", "work", compensate="undo", retry=RETRY)
            .task("ship", "boom")
        ),
        lambda v: (
            workflow("w", v)
            .task("reserve", "work", compensate="undo", retry=RETRY)
            .task("ship", "boom")
        ),
        lambda v: workflow("w", v).task("reserve", "work", retry=RETRY).task("ship", "boom"),
        "step 'reserve' is still to be compensated; in version 2 'reserve' has no compensate",
        lambda e, c, i: _due(e, c),
        status="failed",  # a compensated instance ends failed, its compensation done
    ),
]


def _start(engine: Engine, case: Case) -> tuple[Actions, str]:
    actions = Actions()
    actions.register(engine)
    for child in case.children:
        engine.register(child)
    engine.register(case.v1("1").build())
    inst = engine.execute("w", case.input or {})
    assert inst.status in ("waiting", "running", "compensating"), inst
    return actions, inst.id


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_instance_in_flight_moves_and_completes_on_the_new_version(
    engine: Engine, clock: ManualClock, case: Case
) -> None:
    _, iid = _start(engine, case)
    v1_hash = engine.get(iid).definition_hash
    target = case.ok("2").build()
    plan = engine.plan_migration("w", to=target, mapping=case.mapping)
    assert [(c.instance_id, c.ok, c.reasons) for c in plan.report] == [(iid, True, ())]
    kept = {p: r for p, r in engine.get(iid).step_results.items() if r.status == "completed"}
    assert engine.migrate(plan) == [iid]
    inst = engine.get(iid)
    assert (inst.workflow_version, inst.definition_hash) == ("2", target.hash)
    for path, result in kept.items():  # completed results are kept (under their new names)
        moved = inst.step_results[case.mapping.get(path, path)]
        assert (moved.status, moved.output, moved.completed_at) == (
            result.status, result.output, result.completed_at,
        )  # fmt: skip
    entry = migrated_entry(engine, iid)
    assert entry["from_hash"] == v1_hash and entry["to_hash"] == target.hash
    assert (entry["from_version"], entry["to_version"]) == ("1", "2")
    case.finish(engine, clock, iid)
    done = engine.get(iid)
    assert done.status == case.status, (done.status, done.error, done.step_results)
    if case.status == "completed":
        assert set(done.step_results) >= {s.name for s in target.steps}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_instance_in_flight_that_cannot_move_is_blocked_and_untouched(
    engine: Engine, db_url: str, case: Case
) -> None:
    _, iid = _start(engine, case)
    before = stored(db_url, iid)
    plan = engine.plan_migration("w", to=case.blocked("2").build(), mapping=case.blocked_mapping)
    [check] = plan.report
    assert not check.ok and check.instance_id == iid
    assert any(reason.startswith(case.reason) for reason in check.reasons), check.reasons
    assert engine.migrate(plan) == []
    assert stored(db_url, iid) == before
