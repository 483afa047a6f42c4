"""The safe YAML reader: positions, YAML 1.2 scalars, and every way a document is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import errors
from statemachine.definition import issues, yaml_compose, yaml_source
from statemachine.definition.yaml_source import parse_file, parse_text

WORKFLOW = """\
# order fulfilment
name: orders
version: 2
steps:
  - id: charge
    type: task
    action: payments.charge
    retry: {maxAttempts: 3, interval: 1.5}
  - id: ship
    type: task
    dependsOn: [charge, reserve]
    timeout: null
"""


def refused(text: str) -> errors.DefinitionError:
    with pytest.raises(errors.DefinitionError) as info:
        parse_text(text)
    return info.value


def only_issue(text: str) -> errors.Issue:
    found = refused(text).errors
    assert len(found) == 1, found
    return found[0]


def test_reads_plain_data() -> None:
    doc = parse_text(WORKFLOW)
    assert doc.data == {
        "name": "orders",
        "version": 2,
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "payments.charge",
                "retry": {"maxAttempts": 3, "interval": 1.5},
            },
            {"id": "ship", "type": "task", "dependsOn": ["charge", "reserve"], "timeout": None},
        ],
    }
    assert doc.path is None
    assert list(doc.data) == ["name", "version", "steps"]


def test_value_and_key_positions() -> None:
    doc = parse_text(WORKFLOW)
    assert doc.position(()) == (2, 1)
    assert doc.position(("name",)) == (2, 7)
    assert doc.key_position(("name",)) == (2, 1)
    assert doc.position(("steps",)) == (5, 3)
    assert doc.position(("steps", 0)) == (5, 5)
    assert doc.key_position(("steps", 0, "action")) == (7, 5)
    assert doc.position(("steps", 0, "action")) == (7, 13)
    assert doc.position(("steps", 0, "retry")) == (8, 12)
    assert doc.key_position(("steps", 0, "retry", "interval")) == (8, 29)
    assert doc.position(("steps", 0, "retry", "interval")) == (8, 39)
    assert doc.position(("steps", 1, "timeout")) == (12, 14)


def test_nested_list_positions() -> None:
    doc = parse_text(WORKFLOW)
    assert doc.position(("steps", 1, "dependsOn")) == (11, 16)
    assert doc.position(("steps", 1, "dependsOn", 0)) == (11, 17)
    assert doc.position(("steps", 1, "dependsOn", 1)) == (11, 25)
    block = parse_text("a:\n  - - x\n    - y\n  - [z]\n")
    assert block.data == {"a": [["x", "y"], ["z"]]}
    assert block.position(("a", 0, 0)) == (2, 7)
    assert block.position(("a", 0, 1)) == (3, 7)
    assert block.position(("a", 1, 0)) == (4, 6)


def test_unknown_locations_fall_back_to_the_nearest_ancestor() -> None:
    doc = parse_text(WORKFLOW)
    assert doc.position(("steps", 1, "missing", 3)) == doc.position(("steps", 1))
    assert doc.key_position(("steps", 1, "missing")) == doc.position(("steps", 1))
    assert doc.key_position(()) == (2, 1)
    empty = yaml_source.SourceDocument({}, None, {}, {})
    assert empty.position(("x",)) == (0, 0)


def test_format_loc() -> None:
    assert issues.format_loc(("steps", 2, "dependsOn", 0)) == "steps[2].dependsOn[0]"
    assert issues.format_loc(()) == ""
    assert issues.format_loc((0, "a")) == "[0].a"


def test_yaml_1_1_booleans_stay_strings() -> None:
    words = ["on", "off", "yes", "no", "y", "n", "On", "YES", "No", "Off"]
    doc = parse_text("".join(f"k{i}: {w}\n" for i, w in enumerate(words)))
    assert list(doc.data.values()) == words


def test_core_schema_scalars() -> None:
    text = """\
t: [true, True, TRUE]
f: [false, False, FALSE]
odd: tRuE
nulls: [null, Null, NULL, ~, "", ]
empty:
ints: [0, -7, +3, 012, 0o17, 0x1F]
floats: [1.5, .5, 1e3, -2.5E-1]
special: [.inf, -.Inf, .NaN]
text: [1_000, "12", '1.0', 1:30, 0b101, =]
"""
    data = parse_text(text).data
    assert data["t"] == [True, True, True]
    assert data["f"] == [False, False, False]
    assert data["odd"] == "tRuE"
    assert data["nulls"] == [None, None, None, None, ""]
    assert data["empty"] is None
    assert data["ints"] == [0, -7, 3, 12, 15, 31]
    assert all(type(i) is int for i in data["ints"])
    assert data["floats"] == [1.5, 0.5, 1000.0, -0.25]
    assert data["special"][:2] == [math.inf, -math.inf]
    assert math.isnan(data["special"][2])
    assert data["text"] == ["1_000", "12", "1.0", "1:30", "0b101", "="]


def test_dates_stay_strings() -> None:
    data = parse_text("day: 2024-01-01\nat: 2024-01-01T10:00:00Z\n").data
    assert data == {"day": "2024-01-01", "at": "2024-01-01T10:00:00Z"}


def test_explicit_core_tags_are_honoured() -> None:
    data = parse_text('a: !!str 12\nb: !!int "7"\nc: !!float 1\nd: !!bool "true"\n').data
    assert data == {"a": "12", "b": 7, "c": 1.0, "d": True}
    assert type(data["c"]) is float
    assert "not a valid !!int" in only_issue("a: !!int twelve\n").message


def test_duplicate_keys_point_at_the_second_key_and_are_all_reported() -> None:
    text = "name: a\nsteps:\n  - id: x\n    id: y\nname: b\n"
    found = refused(text).errors
    assert [(i.line, i.column, i.code) for i in found] == [
        (4, 5, "duplicate_key"),
        (5, 1, "duplicate_key"),
    ]
    assert found[0].message == "duplicate key 'id' (first at line 3)"
    assert found[0].location == "steps[0].id"
    assert found[1].message == "duplicate key 'name' (first at line 1)"


def test_keys_must_be_strings() -> None:
    found = refused("1: x\n? [a, b]\n: y\ntrue: z\n'2': fine\n").errors
    assert [(i.line, i.code) for i in found] == [(1, "key_type"), (2, "key_type"), (4, "key_type")]
    assert all("keys must be strings" in i.message for i in found)


def test_merge_keys_are_rejected() -> None:
    issue = only_issue("base: &b {a: 1}\nother:\n  <<: *b\n  c: 2\n")
    assert "merge keys" in issue.message
    assert (issue.line, issue.column) == (3, 3)
    assert parse_text("a: '<<'\nb: <<\n").data == {"a": "<<", "b": "<<"}


@pytest.mark.parametrize(
    "text, tag",
    [
        ("a: !!python/object/apply:os.system ['echo hi']\n", "!!python/object/apply:os.system"),
        ("a: !!python/name:os.system ''\n", "!!python/name:os.system"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!set {x, y}\n", "!!set"),
        ("a: !!omap [x: 1]\n", "!!omap"),
        ("a: !!timestamp 2024-01-01\n", "!!timestamp"),
        ("a: !custom 1\n", "!custom"),
    ],
)
def test_other_tags_are_rejected_at_the_tag(text: str, tag: str) -> None:
    issue = only_issue(text)
    assert issue.message == f"tag {tag} is not allowed"
    assert (issue.line, issue.column, issue.location) == (1, 4, "a")


def test_python_tag_in_a_nested_value_and_at_the_root() -> None:
    issue = only_issue("steps:\n  - run: !!python/object:os.system {}\n")
    assert (issue.line, issue.column, issue.location) == (2, 10, "steps[0].run")
    assert only_issue("!!python/object:os.system {a: 1}\n").code == "tag"


def test_anchors_and_aliases_within_the_caps() -> None:
    doc = parse_text("retry: &r {maxAttempts: 3}\nsteps:\n  - retry: *r\n")
    assert doc.data["steps"][0]["retry"] == {"maxAttempts": 3}
    assert doc.data["steps"][0]["retry"] is not doc.data["retry"]
    assert doc.position(("steps", 0, "retry")) == (3, 12)
    assert doc.position(("steps", 0, "retry", "maxAttempts")) == (1, 25)


def test_billion_laughs_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    issue = only_issue("\n".join(lines) + "\n")
    assert issue.code == "too_large"
    assert "more than 200000 values" in issue.message


def test_too_many_aliases_is_refused() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (yaml_compose.MAX_ALIASES + 1)) + "]\n"
    assert "aliases" in only_issue(text).message


def test_recursive_alias_is_refused() -> None:
    assert only_issue("a: &a [1, *a]\n").code == "recursive_alias"


def test_aliases_cannot_nest_past_the_depth_cap() -> None:
    deep = "[" * 40 + "x" + "]" * 40
    issue = only_issue(f"a: &a {deep}\nb: {deep.replace('x', '*a')}\n")
    assert issue.code == "too_deep"


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "a: " + "{a: " * 10_000 + "x" + "}" * 10_000 + "\n",
        "a: " + "[" * 10_000 + "\n",
        "a:\n" + "".join(" " * i + "- \n" for i in range(10_000))[:900_000],
        "a:\n  " + "- " * 10_000 + "x\n",
        "".join(" " * i + "a:\n" for i in range(1_000)) + " " * 1_000 + "b\n",
    ],
    ids=["flow-seq", "flow-map", "unclosed", "block-seq-lines", "block-seq-inline", "block-map"],
)
def test_deep_nesting_is_refused_without_recursion_error(text: str) -> None:
    issue = only_issue(text)
    assert issue.code == "too_deep", issue
    assert issue.line > 0


def test_nesting_up_to_the_cap_is_fine() -> None:
    depth = yaml_compose.MAX_DEPTH - 1
    data = parse_text("a: " + "[" * depth + "]" * depth + "\n").data
    for _ in range(depth):
        data = data["a"] if isinstance(data, dict) else data[0]


def test_oversized_text_is_refused() -> None:
    issue = only_issue("a: " + "x" * 2_000_000 + "\n")
    assert issue.code == "too_large"
    assert "limit is 1000000" in issue.message
    assert only_issue("a: " + "é" * 600_000).code == "too_large"  # counted in bytes


def test_parse_file_labels_issues_with_the_path(tmp_path: Path) -> None:
    good = tmp_path / "ok.yaml"
    good.write_text(WORKFLOW, encoding="utf-8")
    assert parse_file(good).path == str(good)
    assert parse_file(str(good)).data == parse_text(WORKFLOW).data

    bad = tmp_path / "dup.yaml"
    bad.write_text("a: 1\na: 2\n", encoding="utf-8")
    with pytest.raises(errors.DefinitionError) as info:
        parse_file(bad)
    assert [(i.path, i.line) for i in info.value.errors] == [(str(bad), 2)]
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "content, code",
    [
        (b"a: 1\nb: \xff\n", "encoding"),
        (b"a: " + b"x" * 2_000_000, "too_large"),
        (b"", "empty"),
        (b"a: [1\n", "syntax"),
    ],
)
def test_parse_file_failures_carry_the_path(tmp_path: Path, content: bytes, code: str) -> None:
    target = tmp_path / "wf.yaml"
    target.write_bytes(content)
    with pytest.raises(errors.DefinitionError) as info:
        parse_file(target)
    [issue] = info.value.errors
    assert (issue.path, issue.code) == (str(target), code)
    if code == "encoding":
        assert (issue.line, issue.column) == (2, 4)


def test_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(errors.DefinitionError) as info:
        parse_file(tmp_path / "nope.yaml")
    assert info.value.errors[0].path == str(tmp_path / "nope.yaml")


def test_syntax_error_reports_the_problem_line() -> None:
    issue = only_issue("name: x\nsteps:\n  - id: a\n   bad: [\n")
    assert issue.code == "syntax"
    assert issue.message.startswith("invalid YAML: ")
    issue = only_issue("name: x\nsteps: [a, b\nnext: 1\n")
    assert issue.line == 3
    assert "while parsing a flow sequence (line 2, column 8)" in issue.message
    issue = only_issue("name: x\nbad: 'unterminated\n")
    assert (issue.line, issue.code) == (3, "syntax")


def test_undefined_alias_is_a_syntax_issue() -> None:
    issue = only_issue("a: 1\nb: *nope\n")
    assert (issue.line, issue.column) == (2, 4)
    assert "undefined alias" in issue.message


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_document(text: str) -> None:
    assert only_issue(text).message == "empty document"


def test_multiple_documents_are_refused() -> None:
    issue = only_issue("a: 1\n---\nb: 2\n")
    assert (issue.line, issue.code) == (2, "multiple_documents")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n", "---\n", "# c\n[1]\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    issue = only_issue(text)
    assert issue.message == "a workflow definition must be a mapping"
    assert (issue.line, issue.column) == (1, 1)


@pytest.mark.parametrize(
    "text, char",
    [
        ("a: \x00\n", "0000"),
        ("a: \ud800\n", "D800"),
        ("a: \x07b\n", "0007"),
        ("x: 1\na: \x1b\n", "001B"),
    ],
)
def test_control_characters_and_surrogates(text: str, char: str) -> None:
    issue = only_issue(text)
    assert issue.message == f"character U+{char} is not allowed in YAML"
    assert (issue.line, issue.column, issue.code) == (text.count("\n"), 4, "syntax")


def test_huge_integer_is_an_issue() -> None:
    assert only_issue("a: " + "9" * 5_000 + "\n").code == "number"


def check_reads_or_refuses(text: str) -> None:
    try:
        doc = parse_text(text, path="fuzz.yaml")
    except errors.DefinitionError as exc:
        assert exc.errors
        assert all(i.path == "fuzz.yaml" for i in exc.errors)
    else:
        assert isinstance(doc.data, dict)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab1.-:?[]{},&*!|>'\"#%@`~<= \n\t\x00é")))


@settings(max_examples=400, deadline=None)
@given(st.text() | YAMLISH)
def test_any_text_is_read_or_refused(text: str) -> None:
    check_reads_or_refuses(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(), st.sampled_from(["utf-8:surrogateescape", "latin-1:strict", "utf-16:replace"]))
def test_any_bytes_are_read_or_refused(raw: bytes, codec: str) -> None:
    encoding, handler = codec.split(":")
    check_reads_or_refuses(raw.decode(encoding, handler))


@settings(max_examples=100, deadline=None)
@given(raw=st.binary())
def test_any_file_is_read_or_refused(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    target = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    target.write_bytes(raw)
    try:
        parse_file(target)
    except errors.DefinitionError as exc:
        assert all(i.path == str(target) for i in exc.errors)
