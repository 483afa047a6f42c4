"""The pure part of migration: step renames, the move of a stored state, the mapping's checks
and the reasons an instance is blocked, on hand-made states (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import InputValidationError, branch, workflow
from statemachine.definition.builder import WorkflowBuilder
from statemachine.records import StepResult
from statemachine.runtime import plan as plans
from statemachine.runtime.migration import check_mapping, move_frontier, move_rows, rename
from statemachine.runtime.migration_checks import blockers
from statemachine.runtime.state import State


def test_rename_keeps_item_indexes_suffixes_and_unmapped_paths() -> None:
    mapping = {"each": "all", "each/it/send": "each/it/post", "fan/a/x": "fan/a/y"}
    assert rename("other", mapping) == "other"
    assert rename("each", mapping) == "all"
    assert rename("each/it@3/send", mapping) == "each/it@3/post"
    assert rename("each/it@3/other", mapping) == "all/it@3/other"
    assert rename("each/it@3/", mapping) == "all/it@3/"  # an item's result
    assert rename("fan/a/x#compensate", mapping) == "fan/a/y#compensate"
    assert rename("fan/a/z", mapping) == "fan/a/z"
    assert rename("anything", {}) == "anything"


def test_move_frontier_renames_every_path_it_holds() -> None:
    frontier: dict[str, Any] = {
        "active": ["b", "c"],
        "loops": {"b": 2},
        "loop_started": {"b": "2030-01-01T00:00:00+00:00"},
        "compensations": ["b"],
        "deferred": [["enter", "b", "a"]],
        "order": ["a", "b"],
        "branches": {"b": {"x": {"status": "running"}}},
        "extra": {"b": {"phase": "run", "prev": "a"}},
        "latest": {"b": 1},
        "redo": ["b"],
        "deadline": None,
    }
    moved = move_frontier(frontier, {"a": "A", "b": "B"})
    assert moved["active"] == ["B", "c"]
    assert moved["loops"] == {"B": 2} and list(moved["loop_started"]) == ["B"]
    assert moved["compensations"] == ["B"] and moved["redo"] == ["B"]
    assert moved["deferred"] == [["enter", "B", "A"]]
    assert moved["order"] == ["A", "B"] and moved["latest"] == {"B": 1}
    assert moved["branches"] == {"B": {"x": {"status": "running"}}}
    assert moved["extra"] == {"B": {"phase": "run", "prev": "A"}}
    assert frontier["active"] == ["b", "c"]  # the stored one is left as it was


def test_move_rows_drops_only_paths_no_row_takes_again() -> None:
    rows = [StepResult(step_name=p, status="completed") for p in ("a", "b", "c")]
    out, moved, left = move_rows(rows, {"a": "b", "b": "a"})  # a swap: every path still used
    assert [r.step_name for r in out] == ["b", "a", "c"]
    assert [r.step_name for r in moved] == ["b", "a"] and left == []
    _, moved, left = move_rows(rows, {"c": "d"})
    assert [r.step_name for r in moved] == ["d"] and left == ["c"]


V1 = (
    workflow("w", 1)
    .task("a", "x")
    .parallel("fan", branches=[branch("one").task("s", "x").build()])
    .build()
)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"nope": "a"}, "'nope' is not a step of 'w' (its steps: a, fan, fan/one/s)"),
        ({"a": "nope"}, "'nope' is not a step of version 2 of 'w'"),
        ({"fan/one/s": "b"}, "a step can be renamed, not moved into another scope"),
        ({"a": "fan/one/s"}, "a step can be renamed, not moved into another scope"),
    ],
)
def test_a_mapping_naming_no_step_or_moving_one_is_refused(
    mapping: dict[str, str], message: str
) -> None:
    v2 = (
        workflow("w", 2)
        .task("a", "x")
        .task("b", "x")
        .parallel("fan", branches=[branch("one").task("s", "x").build()])
        .build()
    )
    with pytest.raises(InputValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_mapping(mapping, [V1], v2)


def test_a_mapping_follows_a_renamed_container() -> None:
    v2 = workflow("w", 2).task("a", "x")
    v2 = v2.parallel("fork", branches=[branch("one").task("t", "x").build()]).build()
    assert check_mapping({"fan": "fork", "fan/one/s": "fork/one/t"}, [V1], v2) == {
        "fan": "fork",
        "fan/one/s": "fork/one/t",
    }


def _reasons(
    old: WorkflowBuilder,
    new: WorkflowBuilder,
    steps: dict[str, dict[str, Any]],
    frontier: dict[str, Any],
    mapping: dict[str, str] | None = None,
    status: str = "running",
) -> list[str]:
    """The blockers of a state made of ``steps`` (path -> row fields) and ``frontier``."""
    mapping = mapping or {}
    rows = [StepResult(step_name=p, **fields) for p, fields in steps.items()]
    state = State.restore(status=status, input={}, metadata={}, frontier=frontier, steps=rows)
    moved_rows, _, _ = move_rows(rows, mapping)
    moved = State.restore(
        status=status, input={}, metadata={},
        frontier=move_frontier(frontier, mapping), steps=moved_rows,
    )  # fmt: skip
    return blockers(plans.plan_for(old.build()), plans.plan_for(new.build()), state, moved, mapping)


RUNNING = {"status": "running"}


def test_a_running_step_needs_a_step_of_the_same_type() -> None:
    old = workflow("w", 1).task("a", "x").task("b", "x")
    frontier = {"active": ["b"], "extra": {"b": {"phase": "run"}}}
    steps = {"a": {"status": "completed"}, "b": RUNNING}
    assert _reasons(old, workflow("w", 2).task("a", "x").task("b", "y"), steps, frontier) == []
    assert _reasons(old, workflow("w", 2).task("a", "x"), steps, frontier) == [
        "step 'b' is running and version 2 has no step 'b' (map it to a step of version 2)"
    ]
    renamed = workflow("w", 2).task("a", "x").task("c", "x")
    assert _reasons(old, renamed, steps, frontier, {"b": "c"}) == []
    waits = workflow("w", 2).task("a", "x").wait("b", duration=5)
    assert _reasons(old, waits, steps, frontier) == [
        "step 'b' is a task step running; 'b' in version 2 is a wait step"
    ]


def test_an_event_wait_keeps_its_event() -> None:
    old = workflow("w", 1).wait("w8", event="go")
    frontier = {"active": ["w8"], "extra": {"w8": {"phase": "event", "event": "go"}}}
    steps = {"w8": {"status": "waiting"}}
    assert (
        _reasons(old, workflow("w", 2).wait("w8", event="go").task("z", "x"), steps, frontier) == []
    )
    assert _reasons(old, workflow("w", 2).wait("w8", event="stop"), steps, frontier) == [
        "step 'w8' waits for event 'go'; in version 2 'w8' waits for event 'stop'"
    ]


def test_a_loop_in_flight_keeps_its_target_and_room_for_its_iterations() -> None:
    def loop(target: str, limit: int) -> WorkflowBuilder:
        return (
            workflow("w", 2)
            .task("a", "x")
            .task("b", "x")
            .loop("again", condition="true", target=target, interval=60, max_iterations=limit)
        )

    old = loop("b", 10)
    frontier = {"active": ["again"], "loops": {"b": 3}, "extra": {"again": {"phase": "loop"}}}
    steps = {
        "a": {"status": "completed"},
        "b": {"status": "completed"},
        "again": {"status": "waiting"},
    }
    assert _reasons(old, loop("b", 5), steps, frontier) == []
    assert _reasons(old, loop("a", 5), steps, frontier) == [
        "loop 'again' is in flight going back to 'b'; in version 2 'again' goes back to 'a'"
    ]
    assert _reasons(old, loop("b", 2), steps, frontier) == [
        "loop 'again' has run 3 iterations; in version 2 'again' allows 2"
    ]


def test_a_dag_step_in_flight_cannot_gain_a_dependency_that_never_ran() -> None:
    old = workflow("w", 1).task("a", "x").task("b", "x", depends_on=["a"])
    new = workflow("w", 2).task("a", "x").task("n", "x").task("b", "x", depends_on=["a", "n"])
    frontier = {"active": ["b"], "extra": {"b": {"phase": "run"}}}
    steps = {"a": {"status": "completed"}, "b": RUNNING}
    assert _reasons(old, new, steps, frontier) == [
        "step 'b' depends on 'n' in version 2, which has not run: it would never start"
    ]


def test_a_compensating_instance_keeps_every_compensation_still_to_run() -> None:
    old = workflow("w", 1).task("a", "x", compensate="undo").task("b", "x", compensate="undo")
    frontier = {
        "active": ["b#compensate"],
        "compensations": ["a"],
        "extra": {"b#compensate": {"phase": "run"}},
    }
    steps = {
        "a": {"status": "completed"},
        "b": {"status": "completed"},
        "b#compensate": RUNNING,
    }
    new = workflow("w", 2).task("a", "x").task("b", "x", compensate="undo")
    assert _reasons(old, new, steps, frontier, status="compensating") == [
        "step 'a' is still to be compensated; in version 2 'a' has no compensate"
    ]
    assert _reasons(old, old, steps, frontier, status="compensating") == []


def test_the_input_of_a_step_to_resume_must_fit_its_new_schema() -> None:
    old = workflow("w", 1).task("a", "x")
    frontier = {"active": ["a"], "extra": {"a": {"phase": "retry"}}}
    steps = {"a": {"status": "waiting", "input": {"n": 1}}}
    fits = workflow("w", 2).task("a", "x", input_schema={"type": "object", "required": ["n"]})
    assert _reasons(old, fits, steps, frontier) == []
    refuses = workflow("w", 2).task("a", "x", input_schema={"type": "object", "required": ["m"]})
    [reason] = _reasons(old, refuses, steps, frontier)
    assert reason.startswith(
        "the input of step 'a' does not match the input schema of 'a' in version 2"
    )
    assert "'m' is a required property" in reason


def test_a_subworkflow_waiting_for_its_child_keeps_its_path_and_workflow() -> None:
    old = workflow("w", 1).subworkflow("sub", workflow="child")
    frontier = {"active": ["sub"], "extra": {"sub": {"phase": "child-wait"}}}
    steps = {"sub": {"status": "waiting"}}
    renamed = workflow("w", 2).subworkflow("call", workflow="child")
    assert _reasons(old, renamed, steps, frontier, {"sub": "call"}) == [
        "step 'sub' is waiting for its child, whose id holds the step's path: it cannot be "
        "renamed while the child runs"
    ]
    assert (
        _reasons(old, workflow("w", 2).subworkflow("sub", workflow="child"), steps, frontier) == []
    )


def test_a_parallel_keeps_its_running_branches() -> None:
    def fan(*names: str) -> WorkflowBuilder:
        branches = [branch(n).wait("hold", duration=60).build() for n in names]
        return workflow("w", 2).parallel("fan", branches=branches)

    frontier = {
        "active": ["fan", "fan/a/hold"],
        "branches": {"fan": {"a": {"status": "running"}, "b": {"status": "completed"}}},
        "extra": {"fan": {"phase": "branches"}, "fan/a/hold": {"phase": "timer"}},
    }
    steps = {"fan": {"status": "running"}, "fan/a/hold": {"status": "waiting"}}
    assert _reasons(fan("a", "b"), fan("a", "c"), steps, frontier) == []  # b is done
    assert "parallel 'fan' has branch 'a' running; in version 2 'fan' has no branch 'a'" in (
        _reasons(fan("a", "b"), fan("b", "c"), steps, frontier)
    )
