"""Hostile inputs through the public loader, and property tests over random workflow documents."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statemachine import DefinitionError, ExpressionError, StatemachineError, load_yaml

HEAD = "id: w\nversion: 1\nsteps:\n"

HOSTILE_YAML = {
    "python_object_tag": HEAD + "  - id: a\n    action: !!python/object/apply:os.system ['echo pwned']\n",
    "python_name_tag": "id: !!python/name:os.system w\nsteps: []\n",
    "alias_bomb": (
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))
    ),
    "deep_flow_nesting": "id: w\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "deep_block_nesting": "id: w\nsteps:\n" + "".join("  " * i + "- \n" for i in range(1, 3000)),
    "huge_file": "id: w\ndescription: " + "x" * 2_000_000 + "\nsteps: []\n",
    "duplicate_keys": HEAD + "  - id: a\n    action: noop\n    action: other\n",
    "binary_tag": HEAD + "  - id: a\n    action: !!binary aGVsbG8=\n",
    "not_a_mapping": "- just\n- a list\n",
    "nul_character": HEAD + "  - id: a\x00\n    action: noop\n",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_rejected_with_definition_error(name: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_yaml(HOSTILE_YAML[name])
    assert info.value.errors, "a DefinitionError must list what was wrong"
    assert all(issue.line >= 1 for issue in info.value.errors)


HOSTILE_EXPRESSIONS = [
    "input.__class__",
    "().__class__.__bases__[0].__subclasses__()",
    '__import__("os").system("id")',
    'input.name.upper()',
    '"".join(["a"])',
    "(" * 5000 + "1" + ")" * 5000,
    "lambda: 1",
    "x := 1",
    "open('/etc/passwd')",
    "rand()",
]  # fmt: skip


@pytest.mark.parametrize("expression", HOSTILE_EXPRESSIONS)
def test_hostile_expressions_are_rejected_at_load(expression: str) -> None:
    text = (
        HEAD
        + f"  - id: a\n    action: noop\n  - id: b\n    action: noop\n    dependsOn: [a]\n    condition: {expression!r}\n"
    )
    with pytest.raises(DefinitionError) as info:
        load_yaml(text)
    assert any(issue.location == "steps[1].condition" for issue in info.value.errors), info.value
    assert info.value.errors[0].line == 9


DOS_EXPRESSIONS = [
    "9**9**9",
    '"a" * 10**9',
    "[1] * 10**9",
    '"%999999999d" % 1',
    "[x for x in input] * 10**8",
]


@pytest.mark.parametrize("expression", DOS_EXPRESSIONS)
def test_denial_of_service_expressions_fail_fast_when_evaluated(expression: str) -> None:
    from statemachine.definition import expressions

    with pytest.raises(ExpressionError):
        expressions.compile_expression(expression).evaluate({"input": [1, 2]})


# --- work bound over random nested constructions --------------------------------------------

# Values built from shared references: `[x] * 100` holds 100 references to x, so five levels
# weigh 100**5 although they hold 500 references; then something walks them.
_leaves = st.sampled_from(["0", "'ab'", "1.5", "null", "[]", "{}", "input", "10**99"])
_constructions = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([2, 10, 100, 1000])).map(lambda p: f"[{p[0]}] * {p[1]}"),
        st.tuples(inner, st.sampled_from([2, 100])).map(lambda p: f"({p[0]},) * {p[1]}"),
        inner.map(lambda x: f"[{x}, {x}, {x}]"),
        inner.map(lambda x: f"{{'k': {x}, 'j': [{x}]}}"),
        inner.map(lambda x: f"[{x} for c in 'abcdefghij']"),
        inner.map(lambda x: f"[v for v in [{x}] for c in 'a' * 1000]"),
        inner.map(lambda x: f"[{x}] + [{x}]"),
    ),
    max_leaves=8,
)
_consumers = st.sampled_from(
    [
        "{a} == {b}",
        "{a} != {b}",
        "{a} < {b}",
        "{a} in [{b}]",
        "[{a}] * 3 == [{b}] * 3",
        "sorted([{a}, {b}])",
        "max({a}, {b})",
        "min([{a}])",
        "str({a})",
        "len(str({a}))",
        "contains([{a}], {b})",
        "[x == y for x in [{a}] for y in [{b}] for c in 'a' * 1000]",
        "{a}",
    ]
)
NEST5 = "[[[[[0]*100]*100]*100]*100]*100"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_constructions, b=_constructions, same=st.booleans(), consumer=_consumers)
@example(a=NEST5, b=NEST5, same=False, consumer="{a} == {b}")
@example(a=NEST5, b=NEST5, same=False, consumer="{a} < {b}")
@example(a=NEST5, b=NEST5, same=False, consumer="sorted([{a}, {b}])")
@example(a=NEST5, b=NEST5, same=False, consumer="{a} in [{b}]")
def test_nested_constructions_finish_or_fail_within_the_work_bound(
    a: str, b: str, same: bool, consumer: str
) -> None:
    from statemachine.definition import expressions

    source = consumer.format(a=a, b=a if same else b)
    names = {"input": {"items": list(range(50)), "name": "x" * 100}}
    outcomes = []
    for _ in range(2):
        started = time.thread_time()
        try:
            expression = expressions.compile_expression(source)
            outcomes.append(repr(expression.evaluate(names))[:200])
        except ExpressionError as exc:
            outcomes.append(str(exc))
        took = time.thread_time() - started
        assert took < 2.0, f"{took:.2f} s of CPU for {source}"  # budget ~50 ms; a blowup: minutes
    assert outcomes[0] == outcomes[1]  # the bound is counted, not timed: same answer each time


# --- properties over random documents ---------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d", "charge", "ship"])
durations = st.one_of(
    st.sampled_from(["1s", "5m", "1h30m", "3d", "250ms", "0s", "-1s", "soon", 3, 2.5]),
    st.integers(-5, 10),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8), durations)


def step_strategy() -> st.SearchStrategy[dict[str, Any]]:
    common = {
        "id": names,
        "next": names,
        "end": st.booleans(),
        "dependsOn": st.lists(names, max_size=3),
        "condition": st.sampled_from(["a.ok", "input.n > 1", "true", "unknown_name", "a.", "1 +"]),
        "onError": st.sampled_from(["fail", "continue", "branch", "retry", "fail-fast", "nope"]),
        "errorBranch": names,
        "wait": durations,
        "maxRetries": st.integers(-1, 5),
        "retryDelay": durations,
        "trigger": st.sampled_from(["all_success", "all_done", "always", "bogus"]),
    }
    kinds = {
        "task": {"action": st.sampled_from(["noop", "x"]), "params": st.dictionaries(st.text(max_size=3), scalars, max_size=2), "timeout": durations},
        "choice": {"choices": st.lists(st.fixed_dictionaries({"condition": st.just("a.ok"), "next": names}), max_size=2), "default": names},
        "pass": {"result": scalars},
        "poll": {"action": st.just("noop"), "interval": durations, "timeout": durations, "maxAttempts": st.integers(0, 3)},
        "loop": {"target": names, "maxIterations": st.integers(0, 3), "timeout": durations},
        "wait": {"duration": durations, "event": st.text(max_size=5), "timeout": durations},
    }  # fmt: skip

    @st.composite
    def one(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(sorted(kinds)))
        step: dict[str, Any] = {"id": draw(names), "type": kind}
        for key, strat in {**common, **kinds[kind]}.items():
            if key != "id" and draw(st.booleans()) and draw(st.booleans()):
                step[key] = draw(strat)
        return step

    return one()


documents = st.fixed_dictionaries(
    {"id": st.sampled_from(["w", "", "order"]), "steps": st.lists(step_strategy(), max_size=6)},
    optional={"version": st.integers(0, 3), "timeout": durations, "defaultRetry": st.fixed_dictionaries({"maxAttempts": st.integers(-1, 4)})},
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_give_a_definition_or_a_definition_error(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        definition = load_yaml(text)
    except DefinitionError as exc:
        assert exc.errors
        assert all(issue.line >= 1 and issue.column >= 1 for issue in exc.errors)
        return
    except (ExpressionError, StatemachineError) as exc:  # pragma: no cover - a wrong error type
        pytest.fail(f"{type(exc).__name__} instead of DefinitionError: {exc}")
    again = load_yaml(definition.to_yaml())
    assert again.to_dict() == definition.to_dict()
    assert again.hash == definition.hash
