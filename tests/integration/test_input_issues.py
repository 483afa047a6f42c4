"""``.errors`` has one shape: a bad input, bad event data and a bad definition each list
``Issue``s whose ``location`` names the field, from the argument down."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from statemachine import (
    DefinitionError,
    Engine,
    InputValidationError,
    Issue,
    load_yaml,
    workflow,
)

CUSTOMERS = """
id: signup
inputSchema:
  type: object
  required: [customer]
  properties:
    customer:
      type: object
      required: [email]
      properties:
        email: {type: string}
triggers:
  - event: customer.joined
steps:
  - id: greet
    action: greet
"""


class Customer(BaseModel):
    email: str


class Signup(BaseModel):
    customer: Customer


def _issues(caught: pytest.ExceptionInfo[Any]) -> list[tuple[str, str]]:
    assert all(type(i) is Issue for i in caught.value.errors), caught.value.errors
    return [(i.location, i.code) for i in caught.value.errors]


def test_bad_input_against_a_json_schema_lists_issues_at_the_field(engine: Engine) -> None:
    engine.action("greet")(lambda: None)
    engine.register(load_yaml(CUSTOMERS))
    with pytest.raises(InputValidationError) as caught:
        engine.start("signup", {"customer": {"email": 7}})
    assert _issues(caught) == [("input.customer.email", "type")]
    assert "7 is not of type 'string'" in caught.value.errors[0].message


def test_bad_input_against_a_pydantic_model_lists_issues_at_the_field(engine: Engine) -> None:
    wf = workflow("signup-model", input_schema=Signup).task("greet", handler=lambda: None).build()
    engine.register(wf)
    with pytest.raises(InputValidationError) as caught:
        engine.start("signup-model", {"customer": {}})
    assert _issues(caught) == [("input.customer.email", "missing")]


def test_bad_event_data_lists_issues_at_the_field(engine: Engine) -> None:
    engine.action("greet")(lambda: None)
    engine.register(load_yaml(CUSTOMERS))
    with pytest.raises(InputValidationError) as caught:
        engine.emit("customer.joined", {"customer": {"email": None}})
    assert _issues(caught) == [("data.customer.email", "type")]
    assert engine.list() == []


def test_event_data_that_is_not_json_is_an_issue_at_data(engine: Engine) -> None:
    wf = workflow("waiter").wait("go", event="go").build()
    engine.register(wf)
    iid = engine.start("waiter")
    with pytest.raises(InputValidationError) as caught:
        engine.send_event(iid, "go", {"when": {1, 2}})
    assert _issues(caught) == [("data", "not_json")]


def test_a_bad_definition_lists_issues_at_the_field() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_yaml("id: w\nsteps:\n  - id: a\n    action: x\n    maxAttempts: many\n")
    assert all(type(i) is Issue for i in caught.value.errors)
    assert [i.location for i in caught.value.errors] == ["steps[0].maxAttempts"]


def test_input_issues_survive_pickle(engine: Engine) -> None:
    engine.action("greet")(lambda: None)
    engine.register(load_yaml(CUSTOMERS))
    with pytest.raises(InputValidationError) as caught:
        engine.start("signup", {})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (
        copy.errors
        == caught.value.errors
        == [Issue("'customer' is a required property", location="input", code="required")]
    )
