"""A plan's map-item scopes: derived on demand, bounded, and stable while someone holds them."""

from __future__ import annotations

import gc

from statemachine import branch, workflow
from statemachine.runtime import plan as plans
from tests.unit.driver import Driver


def _nested() -> plans.Plan:
    definition = (
        workflow("nested")
        .map(
            "m",
            items="input",
            iterator=branch("it")
            .task("a", "noop")
            .parallel(
                "par",
                branches=[
                    branch("left").task("l", "noop").build(),
                    branch("right")
                    .map("inner", items="prev", iterator=branch("it2").task("x", "noop").build())
                    .build(),
                ],
            )
            .build(),
        )
        .build()
    )
    return plans.Plan(definition)


def test_item_scopes_are_derived_with_the_paths_of_their_item() -> None:
    plan = _nested()
    item = plan.item_scope("m", 7)
    assert (item.prefix, item.parent, item.branch) == ("m/it@7/", "m", "it@7")
    assert item.steps == plan.scopes["m/it/"].steps
    node = plan.node("m/it@7/par/right/inner/it2@3/x")
    assert node.scope.prefix == "m/it@7/par/right/inner/it2@3/"
    assert (node.scope.parent, node.scope.branch) == ("m/it@7/par/right/inner", "it2@3")
    assert node.step is plan.node("m/it/par/right/inner/it2/x").step
    left = plan.scope("m/it@7/par/left/")
    assert left is not None and (left.parent, left.branch) == ("m/it@7/par", "left")
    right = plan.scope("m/it@7/par/right/")
    assert right is not None and (right.parent, right.branch) == ("m/it@7/par", "right")


def test_an_at_sign_that_follows_no_map_names_nothing() -> None:
    plan = _nested()
    assert plan.scope("m/it@7/par/left@2/") is None  # a parallel's branch has no items
    assert plan.scope("m/other@1/") is None
    assert plan.scope("m/it@x/") is None
    assert plan.find("m/it@7/nope") is None
    assert plan.find("m/it@7/a") is not None


def test_a_held_scope_stays_the_one_its_nodes_point_to() -> None:
    """The interpreter compares scopes by identity (``queued_in``): churn through far more
    items than the plan keeps must not replace a scope a caller still holds."""
    plan = _nested()
    held = plan.item_scope("m", 1)
    for index in range(2, 3 * plans.ITEM_SCOPES_KEPT):
        plan.item_scope("m", index)
    assert plan.node("m/it@1/a").scope is held
    assert plan.item_scope("m", 1) is held


def test_item_scopes_kept_are_bounded() -> None:
    plan = _nested()
    for index in range(5_000):
        plan.node(f"m/it@{index}/par/right/inner/it2@{index}/x")
    gc.collect()
    alive = [
        o for o in gc.get_objects() if isinstance(o, plans.Scope) and o.prefix.startswith("m/")
    ]
    assert len([s for s in alive if "@" in s.prefix]) <= 3 * plans.ITEM_SCOPES_KEPT
    assert len(plan.scopes) == 5 and "@" not in "".join(plan.nodes)


def test_compensation_of_a_map_items_step_found_in_a_fresh_plan() -> None:
    """``saga.undoable`` finds an item's step even when no item scope was built in this process
    (a runner that claimed the instance after a restart)."""
    undo_calls = (
        workflow("undo-items")
        .map(
            "m",
            items="input",
            iterator=branch("it").task("book", "noop", compensate="unbook").build(),
        )
        .task("pay", "noop")
        .build()
    )
    driver = Driver(undo_calls, [1, 2])
    driver.start()
    driver.ok("m/it@0/book", "b0")
    driver.ok("m/it@1/book", "b1")
    driver.plan = plans.Plan(undo_calls)  # as a new process: no item scope materialised
    driver.fail("pay", "card", retryable=False)
    assert driver.state.status == "compensating"
    running = sorted(p for p in driver.state.active)
    assert running == ["m/it@1/book#compensate"] or running == ["m/it@0/book#compensate"]
