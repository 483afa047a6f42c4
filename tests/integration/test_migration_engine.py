"""``Engine.plan_migration`` and ``Engine.migrate`` on SQLite and Postgres: steps renamed inside
branches and map items, completed results kept, the plan checked again at apply time, and the
errors of bad calls."""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import (
    Engine,
    InputValidationError,
    InstanceNotFound,
    MigrationPlan,
    WorkflowNotFound,
    branch,
    workflow,
)
from statemachine.testing import ManualClock
from tests.integration.migration_support import migrated_entry, stored


def _actions(engine: Engine) -> list[str]:
    ran: list[str] = []

    def handler(name: str) -> Any:
        def run(data: Any) -> Any:
            ran.append(name)
            return {"by": name}

        return run

    for name in ("work", "after"):
        engine.action(name)(handler(name))
    return ran


def _map(version: int, inner: str, iterator: str = "it") -> Any:
    return (
        workflow("m", version)
        .task("first", "work")
        .map(
            "each",
            items="input.items",
            iterator=branch(iterator).wait(inner, duration="1h").task("w", "work").build(),
        )
        .build()
    )


def test_a_step_renamed_inside_map_items_moves_with_every_item(
    engine: Engine, clock: ManualClock
) -> None:
    _actions(engine)
    engine.register(_map(1, "hold"))
    iid = engine.execute("m", {"items": [1, 2, 3]}).id
    first = engine.get(iid).step_results["first"]
    v2 = _map(2, "pause")
    plan = engine.plan_migration("m", to=v2, mapping={"each/it/hold": "each/it/pause"})
    assert plan.ok == [iid], plan.report
    assert engine.migrate(plan) == [iid]
    inst = engine.get(iid)
    assert not [p for p in inst.step_results if "hold" in p], list(inst.step_results)
    assert inst.step_results["first"] == first  # a completed result is kept as it was
    clock.advance("1h")
    engine.run_due()
    done = engine.get(iid)
    assert done.status == "completed", (done.error, list(done.step_results))
    assert done.output == [{"by": "work"}] * 3
    assert migrated_entry(engine, iid)["mapping"] == {"each/it/hold": "each/it/pause"}


def test_a_step_renamed_inside_a_parallel_branch_moves(engine: Engine, clock: ManualClock) -> None:
    _actions(engine)

    def fan(version: int, name: str) -> Any:
        branches = [
            branch("slow").wait(name, duration="1h").build(),
            branch("quick").task("w", "work").build(),
        ]
        return workflow("p", version).parallel("fan", branches=branches).task("after", "after")

    engine.register(fan(1, "hold").build())
    iid = engine.execute("p", {}).id
    plan = engine.plan_migration(
        "p", to=fan(2, "pause").build(), mapping={"fan/slow/hold": "fan/slow/pause"}
    )
    assert engine.migrate(plan) == [iid]
    clock.advance("1h")
    engine.run_due()
    done = engine.get(iid)
    assert done.status == "completed", done.error
    assert {"fan/slow/pause", "fan/quick/w", "after"} <= set(done.step_results)
    assert "fan/slow/hold" not in done.step_results


def test_an_instance_that_moved_since_the_plan_is_checked_again_and_skipped(
    engine: Engine, db_url: str
) -> None:
    """Planned while waiting at a step both versions have; it then moves on to a step the new
    version lacks: ``migrate`` checks it again, skips it, says why and leaves it as it was."""
    _actions(engine)
    v1 = workflow("r", 1).wait("a", event="go").wait("b", event="next").build()
    v2 = workflow("r", 2).wait("a", event="go").wait("c", event="next").build()
    engine.register(v1)
    iid = engine.execute("r", {}).id
    plan = engine.plan_migration("r", to=v2)
    assert plan.ok == [iid]
    engine.send_event(iid, "go", {})
    engine.run_due()
    assert engine.get(iid).step_results["b"].status == "waiting"
    before = stored(db_url, iid)
    assert engine.migrate(plan) == []
    [check] = plan.report
    assert not check.ok
    assert check.reasons == (
        "changed since the plan: step 'b' is waiting for event 'next' and version 2 has no "
        "step 'b' (map it to a step of version 2)",
    )
    assert stored(db_url, iid) == before


def test_plan_covers_every_instance_not_over_and_says_why_others_cannot_move(
    engine: Engine,
) -> None:
    _actions(engine)
    v1 = workflow("r", 1).wait("a", event="go").task("w", "work").build()
    engine.register(v1)
    waiting = engine.execute("r", {}).id
    paused = engine.execute("r", {}).id
    engine.pause(paused)
    pending = engine.start("r", {})
    done = engine.execute("r", {}).id
    engine.send_event(done, "go", {})
    engine.run_due()
    assert engine.get(done).status == "completed"
    v2 = workflow("r", 2).wait("a", event="go").task("w", "work").task("x", "after").build()
    plan = engine.plan_migration("r", to=v2)
    assert sorted(plan.ok) == sorted([waiting, paused, pending])  # the completed one is not listed
    ended = engine.plan_migration("r", to=v2, instances=[done]).report
    assert ended[0].reasons == ("it is completed: only instances not over migrate",)
    assert sorted(engine.migrate(plan)) == sorted([waiting, paused, pending])
    assert engine.get(paused).status == "paused"
    again = engine.plan_migration("r", to="2", instances=[waiting]).report
    assert again[0].reasons == (f"it already runs version 2 ({v2.hash})",)
    engine.resume(paused)
    for iid in (waiting, paused, pending):
        engine.run_due()
        engine.send_event(iid, "go", {})
    engine.run_due()
    for iid in (waiting, paused, pending):
        inst = engine.get(iid)
        assert (inst.status, inst.workflow_version) == ("completed", "2"), iid
        assert "x" in inst.step_results


def test_bad_calls_are_refused_with_clear_errors(engine: Engine) -> None:
    _actions(engine)
    engine.register(workflow("r", 1).wait("a", event="go").build())
    other = workflow("other", 1).task("t", "work").build()
    engine.register(other)
    oid = engine.execute("other", {}).id
    v2 = workflow("r", 2).wait("a", event="go").build()
    with pytest.raises(WorkflowNotFound, match="no workflow named 'nope' is stored"):
        engine.plan_migration("nope", to=v2)
    with pytest.raises(InputValidationError, match="cannot migrate 'r' to a definition of 'other'"):
        engine.plan_migration("r", to=other)
    with pytest.raises(WorkflowNotFound, match="'r' has no registered version '7'"):
        engine.plan_migration("r", to="7")
    with pytest.raises(InputValidationError, match=f"instance {oid} runs 'other', not 'r'"):
        engine.plan_migration("r", to=v2, instances=[oid])
    with pytest.raises(InstanceNotFound):
        engine.plan_migration("r", to=v2, instances=["missing"])
    with pytest.raises(InputValidationError, match="'zz' is not a step of 'r'"):
        engine.plan_migration("r", to=v2, mapping={"zz": "a"})
    with pytest.raises(InputValidationError, match="takes the plan plan_migration returned"):
        engine.migrate("r")  # type: ignore[arg-type]
    assert isinstance(engine.plan_migration("r", to=v2), MigrationPlan)
