"""Typed data flow checked at build, from the builder with pydantic models (the YAML corpus is
``broken/flow/``, run by test_one_pass): what proves a mismatch, and what is left undecided."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from statemachine import DefinitionError, workflow
from statemachine.definition import flow_shapes, loader, models
from statemachine.definition.builder import branch, when


class Order(BaseModel):
    order_id: str
    total: float


class Charge(BaseModel):
    order_id: str
    amount: int


class Totals(BaseModel):
    order_id: str
    total: float = 0.0  # a default: the dumped output always has it


class Priced(BaseModel):
    total: float


class MaybeCount(BaseModel):
    count: int | None


class Count(BaseModel):
    count: int


class Level(BaseModel):
    level: Literal["low", "high"]


class LowLevel(BaseModel):
    level: Literal["low", "medium"]


class Address(BaseModel):
    zip: int


class Customer(BaseModel):
    name: str
    address: Address


class PostalCustomer(BaseModel):
    name: str
    address: dict[str, Any]


class ZipText(BaseModel):
    zip: str


class Shipped(BaseModel):
    address: ZipText


def _issues(build: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        build.build()
    return [f"{i.location}: {i.message}" for i in caught.value.errors]


def test_a_missing_field_names_both_steps_the_field_and_what_the_source_has() -> None:
    found = _issues(
        workflow("w")
        .task("validate", "v", output_schema=Order)
        .task("charge", "c", input_schema=Charge)
    )
    assert found == [
        "steps[1].inputSchema: step 'charge' needs field 'amount' (integer), which 'validate'"
        " does not output (its output schema has: order_id, total)"
    ]


def test_a_near_name_gets_a_did_you_mean_and_the_flow_issue_comes_with_the_others() -> None:
    class Wants(BaseModel):
        totl: float

    found = _issues(
        workflow("w")
        .task("validate", "v", output_schema=Order)
        .task("charge", "c", input_schema=Wants, next="nowhere")
    )
    assert any("unknown step 'nowhere'" in f for f in found), found
    assert any("'totl' (number)" in f and "(did you mean 'total'?)" in f for f in found), found


def test_fitting_flows_build() -> None:
    workflow("w").task("a", "a", output_schema=Totals).task("b", "b", input_schema=Priced).build()

    class WholeTotal(BaseModel):
        total: int

    # integer fits number
    workflow("w").task("a", "a", output_schema=WholeTotal).task(
        "b", "b", input_schema=Priced
    ).build()


def test_a_nullable_source_does_not_fit_a_required_integer() -> None:
    found = _issues(
        workflow("w").task("a", "a", output_schema=MaybeCount).task("b", "b", input_schema=Count)
    )
    assert found == [
        "steps[1].inputSchema: step 'b' needs field 'count' as integer, but 'a' gives integer"
        " | null"
    ]


def test_an_enum_must_stay_within_the_target_enum() -> None:
    found = _issues(
        workflow("w").task("a", "a", output_schema=Level).task("b", "b", input_schema=LowLevel)
    )
    assert len(found) == 1 and "'level' as one of 'low', 'medium'" in found[0], found
    assert "'a' gives one of 'low', 'high'" in found[0]


def test_nested_models_are_compared_through_their_refs() -> None:
    found = _issues(
        workflow("w").task("a", "a", output_schema=Customer).task("b", "b", input_schema=Shipped)
    )
    assert found == [
        "steps[1].inputSchema: step 'b' needs field 'address.zip' as string, but 'a' gives integer"
    ]


def test_an_object_without_declared_fields_is_not_decided() -> None:
    workflow("w").task("a", "a", output_schema=PostalCustomer).task(
        "b", "b", input_schema=Shipped
    ).build()


def test_steps_without_schemas_and_unknown_sources_are_not_checked() -> None:
    workflow("w").task("a", "a").task("b", "b", input_schema=Charge).build()
    workflow("w").subworkflow("child", workflow="other").task("b", "b", input_schema=Charge).build()
    workflow("w").task("a", "a", output_schema=Order).wait("w8", event="go").task(
        "b", "b", input_schema=Charge
    ).build()
    workflow("w").task("a", "a", output_schema=Order).task(
        "b", "b", input_schema=Charge, input=lambda prev: prev
    ).build()


def test_a_json_schema_keyword_it_cannot_read_leaves_the_edge_undecided() -> None:
    any_of_both = {"allOf": [{"type": "object"}, {"required": ["amount"]}]}
    workflow("w").task("a", "a", output_schema=Order).task(
        "b", "b", input_schema=any_of_both
    ).build()
    open_schema = {"type": "object", "properties": {"x": {}}, "additionalProperties": True}
    workflow("w").task("a", "a", output_schema=open_schema).choice(
        "c", choices=[when("a.anything > 1", next="b")], default="b"
    ).task("b", "b").build()


def test_a_target_alternative_that_fits_is_enough() -> None:
    either = {"anyOf": [{"type": "array"}, Order.model_json_schema()]}
    workflow("w").task("a", "a", output_schema=Totals).task("b", "b", input_schema=either).build()


def test_a_choice_condition_reading_an_undeclared_field_is_refused() -> None:
    found = _issues(
        workflow("w")
        .task("score", "s", output_schema=Level)
        .choice("route", choices=[when("score.risk == 'high'", next="b")], default="b")
        .task("b", "b")
    )
    assert found == [
        "steps[1].choices[0].condition: unknown field 'risk' of the output of 'score' in"
        " \"score.risk == 'high'\" (its output schema has: level)"
    ]


def test_a_template_reading_an_undeclared_field_is_refused_in_a_mapping() -> None:
    found = _issues(
        workflow("w", input_schema=Order).task("a", "a", input={"id": "${{ input.orderid }}"})
    )
    assert found == [
        "steps[0].input.id: unknown field 'orderid' of the workflow input in"
        " '${{ input.orderid }}' (its inputSchema has: order_id, total) (did you mean 'order_id'?)"
    ]


def test_a_mapping_must_set_the_required_fields_with_fitting_types() -> None:
    found = _issues(
        workflow("w", input_schema=Order).task(
            "b", "b", input_schema=Charge, input={"amount": "${{ input.total }}"}
        )
    )
    assert found == [
        "steps[0].input: step 'b' needs field 'order_id' (string), which its input mapping does"
        " not set (it sets: amount)",
        "steps[0].input.amount: step 'b' needs field 'amount' as integer, but its input mapping"
        " gives number ('${{ input.total }}')",
    ]


def test_text_around_a_template_makes_a_string() -> None:
    found = _issues(
        workflow("w", input_schema=Order).task(
            "b", "b", input_schema=Charge, input={"order_id": "x", "amount": "n=${{ input.total }}"}
        )
    )
    assert found == [
        "steps[0].input.amount: step 'b' needs field 'amount' as integer, but its input mapping"
        " gives string ('n=${{ input.total }}')"
    ]


def test_a_parallel_outputs_each_branch_s_last_output_under_its_name() -> None:
    class Joined(BaseModel):
        left: Order
        right: Order

    found = _issues(
        workflow("w")
        .parallel(
            "both",
            branches=[
                branch("left").task("l", "l", output_schema=Order).build(),
                branch("right").task("r", "r", output_schema=Count).build(),
            ],
        )
        .task("join", "j", input_schema=Joined)
    )
    assert len(found) == 2 and "needs field 'right.order_id' (string)" in found[0], found
    assert "which 'both' does not output" in found[0]


def test_a_dag_step_receives_its_last_listed_dependency() -> None:
    ok = workflow("w").task("a", "a", output_schema=Charge).task("b", "b", output_schema=Count)
    ok.task("c", "c", depends_on=["b", "a"], input_schema=Charge).build()
    bad = workflow("w").task("a", "a", output_schema=Charge).task("b", "b", output_schema=Count)
    found = _issues(bad.task("c", "c", depends_on=["a", "b"], input_schema=Charge))
    assert len(found) == 2 and all("'b' (its last listed dependency)" in f for f in found), found
    # a rule that may run it early: whichever dependency finished, not decided
    early = workflow("w").task("a", "a", output_schema=Charge).task("b", "b", output_schema=Count)
    early.task("c", "c", depends_on=["a", "b"], trigger="one_success", input_schema=Charge).build()


def test_a_map_iterator_starts_with_an_item_of_a_typed_array() -> None:
    class Lines(BaseModel):
        lines: list[Count]

    found = _issues(
        workflow("w", input_schema=Lines).map(
            "each",
            items="input.lines",
            iterator=branch("it").task("p", "p", input_schema=Charge).build(),
        )
    )
    assert len(found) == 2 and all("an item of 'each' does not have" in f for f in found), found


def test_shapes_resolve_refs_and_read_integer_as_a_number() -> None:
    shape = flow_shapes.of_schema(Customer, output=True)
    assert shape is not None
    fields = flow_shapes.fields(shape)
    assert fields is not None and flow_shapes.types(fields["address"]) == {"object"}
    need = flow_shapes.Shape({"type": "number"}, {})
    assert list(flow_shapes.gaps(flow_shapes.Shape({"type": "integer"}, {}), need)) == []
    assert list(flow_shapes.gaps(need, flow_shapes.Shape({"type": "integer"}, {})))


def test_a_definition_without_schemas_skips_the_check() -> None:
    definition = workflow("w").task("a", "a").build()
    assert isinstance(definition, models.WorkflowDefinition)


def test_a_bad_expression_is_reported_as_such_not_raised_by_the_flow_check() -> None:
    found = _issues(
        workflow("w", input_schema=Order)
        .pass_("p", transform="input.(")
        .map("m", items="input.[", iterator=branch("it").task("t", "t").build())
        .task("b", "b", input_schema=Charge)
    )
    assert sum("syntax error" in f for f in found) == 2, found


_KEYS = ["type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf", "allOf",
         "$ref", "additionalProperties", "not", "title"]  # fmt: skip
_TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]
_leaf = st.one_of(
    st.sampled_from(_TYPES),
    st.lists(st.sampled_from(_TYPES), max_size=3),
    st.sampled_from(["#", "#/$defs/X", "#/properties/a", "other.json"]),
    st.lists(st.sampled_from(["a", "b", 1, None, True]), max_size=3),
    st.booleans(),
    st.integers(),
)
_schema = st.recursive(
    st.dictionaries(st.sampled_from(_KEYS), _leaf, max_size=4),
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1]}
        ),
        st.lists(inner, max_size=3).map(lambda alts: {"anyOf": alts}),
        inner.map(lambda item: {"type": "array", "items": item}),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(have=_schema, need=_schema)
def test_any_pair_of_schemas_builds_or_fails_with_definition_issues(
    have: dict[str, Any], need: dict[str, Any]
) -> None:
    """Whatever the schemas (even unsound ones the model refuses), the check only ever adds
    issues: it never raises, never loops."""
    for output_shape in (have, {"type": "object", "properties": {"a": have}, "required": ["a"]}):
        with contextlib.suppress(DefinitionError):
            workflow("w", input_schema=need).task(
                "a", "a", output_schema=output_shape, input={"x": "${{ input.a.b }}"}
            ).choice("c", choices=[when("a.a.b[0].c == 1", next="b")], default="b").task(
                "b", "b", input_schema=need
            ).build()
    list(flow_shapes.gaps(flow_shapes.Shape(have, have), flow_shapes.Shape(need, need)))


def test_a_long_chain_of_steps_that_pass_data_on_is_not_followed_into_a_recursion_error() -> None:
    chain = workflow("w").task("a", "a", output_schema=Count)
    for i in range(2000):
        chain = chain.wait(f"w{i}", duration="1s")
    chain.task("b", "b", input_schema=Charge).build()  # too far back to know: not decided
    short = workflow("w").task("a", "a", output_schema=Count).wait("w", duration="1s")
    assert len(_issues(short.task("b", "b", input_schema=Charge))) == 2


def test_a_loop_going_round_passes_on_what_led_to_it() -> None:
    class Page(BaseModel):
        page: int

    found = _issues(
        workflow("w")
        .task("fetch", "f", input_schema=Page, output_schema=Count)
        .loop("again", condition="fetch.count < 3", target="fetch", max_iterations=5)
    )
    # the first entry gets the (unknown) workflow input; going round, fetch's own output
    assert found == [
        "steps[0].inputSchema: step 'fetch' needs field 'page' (integer), which 'fetch' does not"
        " output (its output schema has: count)"
    ]


def test_a_step_skipped_by_its_condition_passes_its_own_input_on() -> None:
    found = _issues(
        workflow("w")
        .task("a", "a", output_schema=Order)
        .task("maybe", "m", output_schema=Charge, condition="a.total > 10")
        .task("b", "b", input_schema=Charge)
    )
    assert found == [
        "steps[2].inputSchema: step 'b' needs field 'amount' (integer), which 'a' does not"
        " output (its output schema has: order_id, total)"
    ]


def test_a_stored_copy_loads_without_the_flow_check_so_its_instances_resume() -> None:
    data = {
        "id": "w",
        "steps": [
            {"id": "a", "action": "a", "outputSchema": Order.model_json_schema()},
            {"id": "b", "action": "b", "inputSchema": Charge.model_json_schema()},
        ],
    }
    with pytest.raises(DefinitionError):
        loader.load_yaml_text(yaml.safe_dump(data))
    assert loader.load_dict(data).step_index()["b"].kind == "task"


def test_a_constant_in_a_mapping_is_checked_as_its_value() -> None:
    found = _issues(
        workflow("w").task("b", "b", input_schema=Charge, input={"order_id": "o", "amount": "ten"})
    )
    assert found == [
        "steps[0].input.amount: step 'b' needs field 'amount' as integer, but its input mapping"
        " gives 'ten'"
    ]
    workflow("w").task("b", "b", input_schema=Charge, input={"order_id": "o", "amount": 10}).build()
