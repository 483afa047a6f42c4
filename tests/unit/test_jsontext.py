"""``jsontext.encoder`` writes exactly what ``json.dumps`` writes: stored JSON is read back by
the SQLAlchemy column types, and both write paths must agree byte for byte."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import jsontext

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_the_text_is_what_json_dumps_writes(value: Any) -> None:
    assert jsontext.encoder(allow_nan=True)(value) == json.dumps(value)


def test_non_finite_floats_are_refused_when_asked() -> None:
    strict = jsontext.encoder(allow_nan=False)
    assert strict({"x": 1.5}) == '{"x": 1.5}'
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            strict({"x": [bad]})


def test_other_types_raise_type_error_and_a_value_that_contains_itself_recursion_error() -> None:
    encode = jsontext.encoder(allow_nan=True)
    with pytest.raises(TypeError, match="set"):
        encode({"tags": {"a"}})
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(RecursionError):
        encode(looped)
    # the encoder keeps nothing from a failed call
    assert encode({"self": {}}) == '{"self": {}}'
