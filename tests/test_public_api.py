"""Pins the public surface of API.md: acceptance tests outside the repo import exactly these."""

import statemachine
import statemachine.testing

EXPECTED = {
    "workflow", "branch", "when", "RetryPolicy",
    "load_yaml", "load_definitions", "WorkflowDefinition",
    "Engine", "StepContext",
    "WorkflowInstance", "StepResult", "HistoryEntry", "ScheduleInfo",
    "StatemachineError", "DefinitionError", "InputValidationError",
    "WorkflowNotFound", "InstanceNotFound", "InvalidTransition",
    "CriticalError", "StepTimeoutError", "ExpressionError",
    "LoopLimitExceeded",
    # beyond API.md's list: every exception, the Issue of a DefinitionError, the settings object
    "StepError", "OutputNotStorable", "LeaseLost", "StoreError", "StoreRefused", "Issue",
    "EngineSettings",
    # migration of running instances (API.md section 11)
    "MigrationPlan", "MigrationCheck",
    # the typed vocabulary of the signatures and records
    "InstanceStatus", "StepStatus", "ErrorInfo", "JSON", "JSONObject", "Duration",
}  # fmt: skip


def test_statuses_are_strings_and_their_enums() -> None:
    """A status read back compares equal to its string and to its enum member, and dumps as text."""
    import json

    from statemachine import InstanceStatus, StepResult, StepStatus

    step = StepResult(step_name="a", status="completed")
    assert step.status is StepStatus.COMPLETED
    assert step.status == "completed"
    assert json.loads(step.model_dump_json())["status"] == "completed"
    assert {s.value for s in InstanceStatus} >= {"pending", "paused", "timed_out"}


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
    assert statemachine.testing.__all__ == [
        "ManualClock",
        "SimulationError",
        "SimulationReport",
        "load_cases",
        "simulate",
    ]
    clock = statemachine.testing.ManualClock()
    before = clock.now()
    clock.advance("3d")
    assert (clock.now() - before).days == 3


def test_version_is_the_distributions() -> None:
    from importlib import metadata

    assert statemachine.__version__ == metadata.version("durable-statemachine")


def test_errors_are_also_the_builtins_a_caller_would_catch() -> None:
    """httpx/pydantic style: `except LookupError` catches an unknown id, `except ValueError` a
    bad definition or input, `except TimeoutError` a step timeout; pickling keeps all of it."""
    import pickle

    cases = [
        (statemachine.InstanceNotFound("abc"), LookupError),
        (statemachine.WorkflowNotFound("w"), LookupError),
        (statemachine.DefinitionError("bad"), ValueError),
        (statemachine.InputValidationError("bad input"), ValueError),
        (statemachine.StepTimeoutError("slow", step="s"), TimeoutError),
    ]
    for error, builtin in cases:
        assert isinstance(error, builtin) and isinstance(error, statemachine.StatemachineError)
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert isinstance(again, builtin)
