"""The copy rule of a state's step records (``State.clone``, ``peek``, ``edit``, ``put``).

A decision changes a clone; the clone shares every step record with the state it came from
until it changes one, and it changes one only through ``edit`` (a private copy, taken once) or
``put``. Reading (``steps``, ``peek``) never copies and hands out the shared record, typed
read-only (``StepView``), so a change through a read is a type error rather than a change to
the state the decision started from.
"""

from __future__ import annotations

from statemachine.runtime.state import State, StepState
from statemachine.vocabulary import StepStatus


def _state() -> State:
    state = State()
    state.put(StepState("a", status=StepStatus.RUNNING, attempts=1))
    state.put(StepState("b", status=StepStatus.COMPLETED, output=1))
    return state


def test_a_clone_reads_the_shared_records_without_copying_them() -> None:
    state = _state()
    clone = state.clone()
    assert clone.peek("a") is state.peek("a")
    assert clone.steps["b"] is state.steps["b"]
    assert [st for st in clone.steps.values()] == [st for st in state.steps.values()]


def test_edit_copies_a_record_once_and_leaves_the_original_alone() -> None:
    state = _state()
    clone = state.clone()
    mine = clone.edit("a")
    assert mine is not state.peek("a")
    mine.attempts = 2
    assert clone.edit("a") is mine  # the same private copy for the rest of the decision
    assert clone.peek("a") is mine and clone.steps["a"] is mine
    original = state.peek("a")
    assert original is not None and original.attempts == 1


def test_put_and_step_give_records_of_the_clone_only() -> None:
    state = _state()
    clone = state.clone()
    clone.put(StepState("c"))
    clone.step("d").status = StepStatus.SKIPPED
    clone.step("b").output = 2
    assert set(state.steps) == {"a", "b"}
    b = state.peek("b")
    assert b is not None and b.output == 1
    assert clone.steps["d"].status == StepStatus.SKIPPED


def test_a_settled_state_edits_its_records_in_place() -> None:
    clone = _state().clone()
    clone.settle()
    record = clone.peek("a")
    assert clone.edit("a") is record
