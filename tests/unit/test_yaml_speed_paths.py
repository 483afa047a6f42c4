"""libyaml and the pure-Python parser read every text alike: same data, positions and errors.

``yaml_compose`` parses with libyaml when PyYAML has it and falls back to PyYAML's own parser for
what libyaml reads differently and for every document libyaml refuses; these tests hold the two
paths to the same results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import errors, load_yaml
from statemachine.definition import yaml_compose
from statemachine.definition.yaml_source import parse_text

needs_libyaml = pytest.mark.skipif(yaml_compose._CParser is None, reason="PyYAML without libyaml")


def outcome(text: str, *, libyaml: bool) -> tuple[Any, ...]:
    """Everything ``parse_text`` gives for ``text``, comparable, on one of the two paths."""
    saved = yaml_compose._CParser
    if not libyaml:
        yaml_compose._CParser = None
    try:
        doc = parse_text(text, path="x.yaml")
    except errors.DefinitionError as exc:
        return ("refused", [(i.message, i.location, i.line, i.column, i.code) for i in exc.errors])
    finally:
        yaml_compose._CParser = saved
    # repr: a NaN is not equal to itself
    return ("read", repr(doc.data), dict(doc.positions), dict(doc.key_positions))


def assert_same(text: str) -> None:
    assert outcome(text, libyaml=True) == outcome(text, libyaml=False), text


@pytest.fixture(params=["libyaml", "pure"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "libyaml" and yaml_compose._CParser is None:
        pytest.skip("PyYAML without libyaml")
    if request.param == "pure":
        monkeypatch.setattr(yaml_compose, "_CParser", None)
    yield request.param


DEFINITION = """\
id: orders
version: 2
description: |
  Charge, then ship.
defaultRetry: {maxAttempts: 3, interval: 1.5}
steps:
  - id: charge
    action: payments.charge   # a comment
    params:
      amount: ${{ input.amount }}
      currency: 'EUR'
  - id: ship
    type: task
    action: shipping.send
    dependsOn: [charge]
    timeout: null
"""

# each one was read differently by the two parsers before the fallbacks, or is close to one
CORPUS = [
    DEFINITION,
    DEFINITION.rstrip("\n"),
    "\ufeff" + DEFINITION,
    # tabs between tokens: libyaml takes them, PyYAML refuses them
    "a:\tb\n",
    "a: b\t\n",
    "a: 'x'\t# c\n",
    "a: [1,\t2]\n",
    "a: |\n  x\ty\n",
    # a BOM past the start of the text
    "a: 1\n\ufeff",
    "\n\ufeff",
    # a comment glued to a block scalar's header
    "a: >#c\n  x\n",
    "a: |-#\n  x\n",
    # tags: odd ones libyaml takes; ``!`` alone
    "!.!",
    "a: !.! x\n",
    "a: ! 12\n",
    "a: ! '12'\n",
    "? !",
    "a: !\n",
    "a: !!str\n",
    "a: !!int 12\n",
    "a: !!python/object:os.system {}\n",
    # ``?`` inside a plain scalar in a flow collection
    "{a?: 1}",
    "{a: 1?}\n",
    "[1?, 2]\n",
    "a: what? no\n",
    # empty values in flow collections and at an unended last line
    "{a: 1, b: }",
    "a: {b: , c}\n",
    "a: [b: ]\n",
    "a: {? }\n",
    "? a",
    "? a\n",
    "a:\n  ? b",
    "\ufeff? a",
    "a:",
    "a: |",
    # line breaks other than \n, non-ASCII columns
    "a: b\rc: d\r",
    "a: b\r\nc: d\r\n",
    "a: b\x85c: d",
    "a: é\u2028b: ü",
    "é: [1, é]\n",
    "😀: [😀, 😀: x]\n",
    # anchors, aliases, merge keys, keys that are not strings
    "retry: &r {maxAttempts: 3}\nsteps:\n  - retry: *r\n",
    "a: &x 1\n*x : 2\n",
    "a: &a [1, *a]\n",
    "a: &a 1\nb: &a 2\n",
    "a: 1\nb: *nope\n",
    "base: &b {a: 1}\nother:\n  <<: *b\n",
    "1: x\n? [a, b]\n: y\ntrue: z\n",
    "a: 1\na: 2\n",
    # malformed: libyaml refuses, PyYAML words it
    "name: x\nsteps: [a, b\nnext: 1\n",
    "name: x\nsteps:\n  - id: a\n   bad: [\n",
    "name: x\nbad: 'unterminated\n",
    "a: b: c\n",
    "{a: 1",
    "%YAML 1.3\n---\na: 1\n",
    "a: 1\n---\nb: 2\n",
    "k" * 1100 + ": v\n",
    # not a mapping, empty
    "- a\n",
    "",
    "# only a comment\n",
    "---\n",
    # control characters
    "a: \x00\n",
    "a: \x07b\n",
]


@pytest.mark.parametrize("text", CORPUS)
@needs_libyaml
def test_libyaml_and_pure_python_read_alike(text: str) -> None:
    assert_same(text)


TOKENS = [
    *"ab1.-:?[]{},&*!|>'\"#%@`~<= \n\n\t\x00é\r\\",
    *["\u2028", "\x85", "\ufeff", "- ", ": ", "---", "...", "&a ", "*a", "!!str ", "%YAML 1.1\n"],
    *["? ", "  ", "    ", "<<", "${{ x }}"],
]


@needs_libyaml
@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_any_yamlish_text_reads_alike(text: str) -> None:
    assert_same(text)


@needs_libyaml
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "  ", "    ", "- ", "  - "]),
            st.sampled_from(["k", "id", "a b", "'q'", "? x", "<<", "1", ""]),
            st.sampled_from([":", ": ", ":\t", " "]),
            st.sampled_from(
                ["", "x", "1.5", "~", "{a: }", "[b, c]", "|", ">-", "&a v", "*a", "!!str 1"]
            ),
        ),
        max_size=8,
    ).map(lambda lines: "\n".join("".join(parts) for parts in lines)),
    st.booleans(),
)
def test_any_block_text_reads_alike(text: str, newline_at_end: bool) -> None:
    assert_same(text + "\n" if newline_at_end else text)


@needs_libyaml
def test_an_ordinary_definition_is_parsed_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fallback(text: str) -> None:
        raise AssertionError("fell back to the pure-Python parser")

    monkeypatch.setattr(yaml_compose, "_PyParser", no_fallback)
    steps = "".join(
        f"  - id: s{i}\n    action: noop\n    params:\n      n: ${{{{ input.n }}}}\n"
        for i in range(50)
    )
    definition = load_yaml(f"id: big\nversion: 1\nsteps:\n{steps}")
    assert len(definition.steps) == 50
    assert parse_text(DEFINITION).position(("steps", 1, "dependsOn", 0)) == (15, 17)


@needs_libyaml
def test_libyaml_errors_keep_pyyaml_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.DefinitionError) as info:
        parse_text("name: x\nsteps: [a, b\nnext: 1\n", path="wf.yaml")
    [issue] = info.value.errors
    assert issue.message == (
        "invalid YAML: while parsing a flow sequence (line 2, column 8): "
        "expected ',' or ']', but got ':'"
    )
    assert (issue.path, issue.line, issue.column, issue.code) == ("wf.yaml", 3, 5, "syntax")


@pytest.mark.parametrize(
    "text, code",
    [
        ("a: " + "[" * 10_000 + "\n", "too_deep"),
        ("a:\n  " + "- " * 10_000 + "x\n", "too_deep"),
        ("a: &a x\nb: [" + ", ".join(["*a"] * (yaml_compose.MAX_ALIASES + 1)) + "]\n", "too_large"),
        ("a: [" + ", ".join(["1"] * (yaml_compose.MAX_NODES + 1)) + "]\n", "too_large"),
        ("a: &a [1, *a]\n", "recursive_alias"),
        ("a: 1\na: 2\n", "duplicate_key"),
        ("a: !custom 1\n", "tag"),
        ("b: &b {a: 1}\nc:\n  <<: *b\n", "key_type"),
        ("a: [1\n", "syntax"),
        ("a: 1\n---\nb: 2\n", "multiple_documents"),
    ],
)
def test_caps_and_refusals_on_both_paths(parser: str, text: str, code: str) -> None:
    with pytest.raises(errors.DefinitionError) as info:
        parse_text(text)
    assert [i.code for i in info.value.errors] == [code]
    assert info.value.errors[0].line > 0


def test_scalars_on_both_paths(parser: str) -> None:
    data = parse_text("t: true\nn: ~\ni: 0x1F\nf: .inf\ns: on\nq: '1'\nd: 2024-01-01\n").data
    assert data == {
        "t": True,
        "n": None,
        "i": 31,
        "f": math.inf,
        "s": "on",
        "q": "1",
        "d": "2024-01-01",
    }
