"""Every error of ``statemachine.errors`` crosses a process boundary (pickle) unchanged."""

from __future__ import annotations

import inspect
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from statemachine import errors

ISSUE = errors.Issue("bad step", location="steps[0]", path="wf.yaml", line=3, column=5, code="x")
SAMPLES: dict[type[errors.StatemachineError], errors.StatemachineError] = {
    errors.StatemachineError: errors.StatemachineError("something went wrong"),
    errors.DefinitionError: errors.DefinitionError([ISSUE, errors.Issue("another")]),
    errors.ExpressionError: errors.ExpressionError("bad name", expression="a +"),
    errors.InputValidationError: errors.InputValidationError(
        "input is invalid", errors=[errors.Issue("required", location="input.n", code="missing")]
    ),
    errors.WorkflowNotFound: errors.WorkflowNotFound("order"),
    errors.InstanceNotFound: errors.InstanceNotFound("abc"),
    errors.InvalidTransition: errors.InvalidTransition(
        "cannot resume", instance_id="i-1", status="completed"
    ),
    errors.StepError: errors.StepError("boom", step="charge", attempt=2),
    errors.CriticalError: errors.CriticalError("card refused", step="charge", attempt=1),
    errors.StepTimeoutError: errors.StepTimeoutError("too slow", step="wait", attempt=3),
    errors.LoopLimitExceeded: errors.LoopLimitExceeded("ran 10 times", step="repeat", attempt=1),
    errors.OutputNotStorable: errors.OutputNotStorable("not JSON", step="a"),
    errors.LeaseLost: errors.LeaseLost("instance i-1 is now owned by another worker"),
    errors.StoreError: errors.StoreError("database error: disk full"),
    errors.StoreRefused: errors.StoreRefused("the database refused the data: NUL in a name"),
}


def _error_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    ]


def test_every_error_class_has_a_sample() -> None:
    """A class added to errors.py without a sample here would escape the round trip below."""
    assert set(_error_classes()) == set(SAMPLES)


@pytest.mark.parametrize("error", SAMPLES.values(), ids=lambda e: type(e).__name__)
def test_round_trips_through_pickle(error: errors.StatemachineError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)
    assert copy.code == error.code


def test_instance_not_found_message_is_not_doubled() -> None:
    copy = pickle.loads(pickle.dumps(errors.InstanceNotFound("abc")))
    assert str(copy) == "no workflow instance with id 'abc'"
    assert copy.instance_id == "abc"


def _raise_not_found(instance_id: str) -> None:
    raise errors.InstanceNotFound(instance_id)


def test_crosses_a_process_pool() -> None:
    with ProcessPoolExecutor(1) as pool, pytest.raises(errors.InstanceNotFound) as caught:
        pool.submit(_raise_not_found, "abc").result(timeout=60)
    assert str(caught.value) == "no workflow instance with id 'abc'"
    assert caught.value.instance_id == "abc"
