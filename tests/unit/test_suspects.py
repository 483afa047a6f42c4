"""A handler in flight is read from the state column a real decision writes (``suspects``)."""

from __future__ import annotations

from datetime import UTC, datetime

from statemachine import workflow
from statemachine.runtime import interpreter as interp
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State
from statemachine.store import suspects

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_started_task_is_in_flight_until_its_result_is_recorded() -> None:
    definition = workflow("w").task("a", "act").wait("nap", duration="1h").task("b", "act").build()
    plan = plans.plan_for(definition)
    state = State.restore(status="pending", input={}, metadata={}, frontier={}, steps=[])
    assert not suspects.handler_in_flight(state.frontier_json())

    started = interp.decide(plan, state, interp.Start(), NOW, "i")
    assert started.runnable(plan) == ["a"]
    assert suspects.handler_in_flight(started.state.frontier_json())
    assert suspects.takeover(started.state.frontier_json(), alone=False) == (1, 0)
    assert suspects.takeover(started.state.frontier_json(), alone=True) == (1, 1)

    done = interp.decide(plan, started.state, interp.StepSucceeded("a", 1), NOW, "i")
    assert done.state.status == "waiting"  # on the timer: no handler runs
    assert not suspects.handler_in_flight(done.state.frontier_json())
    assert suspects.takeover(done.state.frontier_json(), alone=True) == (0, 0)
