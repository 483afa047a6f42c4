"""`register` checks subworkflow targets: a missing or cyclic child is a DefinitionError at once,
naming the step, instead of a failure at run time (or nesting without end)."""

from __future__ import annotations

import pytest

from statemachine import DefinitionError, Engine, WorkflowNotFound, load_yaml, workflow


def test_an_unregistered_child_is_refused_naming_the_step(engine: Engine) -> None:
    parent = workflow("parent").subworkflow("verify", workflow="kyc-check").build()
    with pytest.raises(DefinitionError) as caught:
        engine.register(parent)
    (issue,) = caught.value.errors
    assert issue.location == "verify" and "'kyc-check'" in issue.message
    assert "not registered" in issue.message
    with pytest.raises(WorkflowNotFound):
        engine.start("parent", {})  # nothing was registered


def test_a_child_registered_before_or_in_the_same_call_counts(engine: Engine) -> None:
    child = workflow("kyc").task("check", "noop").build()
    parent = workflow("onboard").subworkflow("verify", workflow="kyc").build()
    engine.register([parent, child])  # order within one call does not matter
    assert engine.execute("onboard", {"who": "ada"}).status == "completed"
    other = workflow("onboard-2").subworkflow("verify", workflow="kyc").build()
    engine.register(other)  # kyc is registered already
    assert engine.execute("onboard-2", {}).status == "completed"


def test_a_near_miss_child_name_gets_a_hint(engine: Engine) -> None:
    engine.register(workflow("kyc-check").task("a", "noop").build())
    with pytest.raises(DefinitionError) as caught:
        engine.register(workflow("p").subworkflow("verify", workflow="kyc-chek").build())
    assert "did you mean 'kyc-check'" in str(caught.value)


def test_a_self_recursive_workflow_is_refused(engine: Engine) -> None:
    text = "id: fractal\nsteps:\n  - id: again\n    type: subworkflow\n    workflow: fractal\n"
    with pytest.raises(DefinitionError) as caught:
        engine.register(load_yaml(text))
    assert "fractal -> fractal" in str(caught.value)


def test_a_cycle_through_another_workflow_is_refused(engine: Engine) -> None:
    a = workflow("a").subworkflow("to-b", workflow="b").build()
    b = workflow("b").task("x", "noop").subworkflow("to-a", workflow="a").build()
    with pytest.raises(DefinitionError) as caught:
        engine.register([a, b])
    message = str(caught.value)
    assert "a -> b -> a" in message and "b -> a -> b" in message
