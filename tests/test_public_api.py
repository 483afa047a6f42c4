"""Pins the public surface of API.md: acceptance tests outside the repo import exactly these."""

import statemachine
import statemachine.testing

EXPECTED = {
    "workflow", "branch", "when", "RetryPolicy",
    "load_yaml", "load_definitions", "WorkflowDefinition",
    "Engine", "StepContext",
    "WorkflowInstance", "StepResult", "HistoryEntry",
    "StatemachineError", "DefinitionError", "InputValidationError",
    "WorkflowNotFound", "InstanceNotFound", "InvalidTransition",
    "CriticalError", "StepTimeoutError", "ExpressionError",
    "LoopLimitExceeded",
}  # fmt: skip


def test_exports_exactly_the_contract() -> None:
    assert set(statemachine.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(statemachine, name) is not None


def test_every_error_is_a_statemachine_error() -> None:
    for name in EXPECTED:
        obj = getattr(statemachine, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, statemachine.StatemachineError), name


def test_manual_clock_is_exported() -> None:
    assert statemachine.testing.__all__ == ["ManualClock"]
    clock = statemachine.testing.ManualClock()
    before = clock.now()
    clock.advance("3d")
    assert (clock.now() - before).days == 3
