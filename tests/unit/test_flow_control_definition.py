"""Concurrency and priority as a definition declares them: builder and YAML give the same
definition, and every bad value is a DefinitionError at its line and column."""

from __future__ import annotations

import pytest

from statemachine import DefinitionError, workflow
from statemachine.definition import flow_control, loader

GOOD = """id: orders
concurrency: {limit: 1, key: "${{ input.customer_id }}"}
priority: 5
steps:
  - id: ship
    action: ship
"""


def test_builder_and_yaml_give_the_same_definition() -> None:
    built = (
        workflow("orders")
        .concurrency(1, key="${{ input.customer_id }}")
        .priority(5)
        .task("ship", "ship")
        .build()
    )
    loaded = loader.load_yaml_text(GOOD)
    assert built.hash == loaded.hash
    assert loaded.concurrency is not None and loaded.concurrency.limit == 1
    assert loaded.priority == 5
    assert loaded.to_dict()["concurrency"] == {"limit": 1, "key": "${{ input.customer_id }}"}


def test_a_bare_key_expression_is_a_template() -> None:
    d = workflow("w").concurrency(2, key="input.customer_id").task("t", "t").build()
    assert d.concurrency is not None and d.concurrency.key == "${{ input.customer_id }}"
    assert flow_control.concurrency_key(d, {"customer_id": 7}) == "7"
    assert flow_control.concurrency_key(d, {"customer_id": "c-1"}) == "c-1"


def test_no_concurrency_changes_no_hash() -> None:
    plain = workflow("w").task("t", "t").build()
    assert "concurrency" not in plain.to_dict() and "priority" not in plain.to_dict()
    assert flow_control.concurrency_key(plain, {}) is None
    keyless = workflow("w").concurrency(3).task("t", "t").build()
    assert flow_control.concurrency_key(keyless, {"x": 1}) == ""


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (GOOD.replace("limit: 1", "limit: 0"), ":2:22: concurrency.limit", "greater than"),
        (GOOD.replace("input.customer_id", "inpt.customer_id"), ":2:30: concurrency.key", "did you mean 'input'"),
        (GOOD.replace("input.customer_id", "input.("), ":2:30: concurrency.key", ""),
        (GOOD.replace("limit: 1", "limt: 1"), ":2:15: concurrency.limt", "did you mean 'limit'"),
        (GOOD.replace("priority: 5", "priority: high"), ":3:11: priority", "integer"),
        (GOOD.replace("priority: 5", "priority: 99999999"), ":3:11: priority", "less than"),
        (GOOD.replace("priority: 5", "priority: true"), ":3:11: priority", "integer"),
    ],
)  # fmt: skip
def test_bad_values_are_reported_at_their_line(text: str, where: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        loader.load_yaml_text(text)
    assert where in str(caught.value)
    assert message in str(caught.value)


def test_the_builder_refuses_bad_values() -> None:
    with pytest.raises(DefinitionError, match=r"concurrency\.key: unknown name 'steps'"):
        workflow("w").concurrency(1, key="${{ steps.a }}").task("t", "t").build()
    with pytest.raises(DefinitionError, match=r"concurrency\.limit"):
        workflow("w").concurrency(0).task("t", "t").build()
    with pytest.raises(DefinitionError, match="priority"):
        workflow("w").priority(2_000_000).task("t", "t").build()


def test_the_graph_shows_the_flow_control_on_its_start_node() -> None:
    from statemachine import workflow

    keyed = workflow("w").concurrency(1, key="input.customer").priority(5).pass_("a").build()
    assert 'start(("start: at most 1 running per ${{ input.customer }}; priority 5"))' in (
        keyed.to_mermaid()
    )
    assert "  start((start))\n" in workflow("v").pass_("a").build().to_mermaid()
