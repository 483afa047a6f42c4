"""The YAML format's JSON Schema and its reference (docs/yaml.md) cannot drift from the models.

Every field of the definition models is walked, mapped to its YAML key the way the loader maps
it, and must be a property of the schema (for steps: allowed on that step type) and a row of
docs/yaml.md. The shipped schema must be what ``statemachine schema`` prints, accept every file
of ``definitions/`` and reject every file of the broken corpus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from statemachine import DefinitionError, load_yaml
from statemachine.definition import durations, issues, models, yaml_keys, yaml_schema, yaml_source

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "statemachine.schema.json"
REFERENCE = ROOT / "docs" / "yaml.md"
DEFINITIONS = sorted((ROOT / "definitions").glob("*.yaml"))
BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../docs/statemachine.schema.json"

STEP_CLASSES: tuple[type[models.StepBase], ...] = get_args(get_args(models.Step)[0])
#: (model, field) pairs that have no YAML key, and why
NOT_IN_YAML = {
    ("WorkflowDefinition", "on_complete"): "a Python callable: builder only (.on_complete)",
    ("WorkflowDefinition", "source_path"): "set by the loader from the file's path",
    ("RetryPolicy", "retry_on"): "Python exception types: builder only",
}
#: model -> where its YAML keys live in the schema
SCHEMA_OBJECT = {
    "WorkflowDefinition": (),
    "RetryPolicy": ("definitions", "retry"),
    "ChoiceRule": ("definitions", "choice"),
    "Branch": ("definitions", "branch"),
    "Trigger": ("definitions", "trigger", "anyOf", 1),
    **{cls.__name__: ("definitions", "step") for cls in STEP_CLASSES},
}
MODELS: list[type[BaseModel]] = [
    models.WorkflowDefinition,
    models.RetryPolicy,
    models.Trigger,
    models.ChoiceRule,
    models.Branch,
    *STEP_CLASSES,
]


def schema() -> dict[str, Any]:
    return yaml_schema.yaml_schema()


def yaml_fields() -> list[tuple[str, str, str]]:
    """(model, field, YAML key) of every field that can be written in YAML."""
    out = []
    for model in MODELS:
        for field in model.model_fields:
            if (model.__name__, field) in NOT_IN_YAML:
                continue
            out.append((model.__name__, field, yaml_keys.canonical_key(issues.yaml_key(field))))
    return out


def documented_keys() -> set[str]:
    """Keys that head a row of a table in docs/yaml.md: "| `dependsOn` (`depends_on`) | ..."."""
    keys: set[str] = set()
    for row in re.findall(r"^\|([^|\n]*)\|", REFERENCE.read_text(), re.M):
        keys.update(re.findall(r"`([^`]+)`", row))
    return keys


def test_every_model_field_can_be_given_in_yaml_or_is_a_listed_exception() -> None:
    named = {(m.__name__, f) for m in MODELS for f in m.model_fields}
    assert set(NOT_IN_YAML) <= named  # an exception for a field that is gone is stale
    assert len(yaml_fields()) > 50


@pytest.mark.parametrize(("model", "field", "key"), yaml_fields())
def test_the_field_is_a_schema_property(model: str, field: str, key: str) -> None:
    node: Any = schema()
    for part in SCHEMA_OBJECT[model]:
        node = node[part]
    assert key in node["properties"], f"{model}.{field}: YAML key {key!r} is not in the schema"


@pytest.mark.parametrize("step", STEP_CLASSES, ids=lambda c: c.__name__)
def test_a_step_type_allows_exactly_its_fields(step: type[models.StepBase]) -> None:
    kind = step.model_fields["type"].default
    rule = next(
        r["then"]
        for r in schema()["definitions"]["step"]["allOf"]
        if r["if"].get("properties", {}).get("type", {}).get("const") == kind
    )
    allowed = set(rule["propertyNames"]["enum"])
    for field in step.model_fields:
        key = yaml_keys.canonical_key(issues.yaml_key(field))
        assert key in allowed, f"{kind}: {key} ({field}) is not allowed on a {kind} step"


@pytest.mark.parametrize(("model", "field", "key"), yaml_fields())
def test_the_field_is_documented(model: str, field: str, key: str) -> None:
    assert key in documented_keys(), f"{model}.{field}: `{key}` has no row in docs/yaml.md"


def test_every_key_the_schema_takes_is_documented_in_every_spelling() -> None:
    def names(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = set(node.get("properties", {})) if node.get("type") == "object" else set()
            return found.union(*(names(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(names(v) for v in node))
        return set()

    missing = names(schema()) - documented_keys()
    assert not missing, f"keys of the schema with no row in docs/yaml.md: {sorted(missing)}"


def test_the_reference_examples_fit_the_schema() -> None:
    """Each yaml block of docs/yaml.md: a list is steps, a mapping (part of) a workflow."""
    whole = schema()
    part = {k: v for k, v in whole.items() if k not in {"required", "anyOf"}}
    step = {"$ref": "#/definitions/step", "definitions": whole["definitions"]}
    blocks = re.findall(r"^```yaml\n(.*?)^```", REFERENCE.read_text(), re.M | re.S)
    assert len(blocks) >= 10
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, list):
            found = [e for item in data for e in jsonschema.Draft7Validator(step).iter_errors(item)]
        else:
            found = list(jsonschema.Draft7Validator(part).iter_errors(data))
        assert [e.message for e in found] == [], block
        if isinstance(data, dict) and "steps" in data:
            load_yaml(block)


def test_enums_follow_the_models() -> None:
    step = schema()["definitions"]["step"]["properties"]
    assert step["type"]["enum"] == list(models.STEP_TYPES)
    assert step["trigger"]["enum"] == list(models.TRIGGER_RULES)
    assert step["onError"]["enum"] == list(yaml_keys.ON_ERROR)
    assert step["mode"]["enum"] == ["all", "race"]
    assert step["failure"]["enum"] == ["fail-fast", "wait-all"]


def test_the_shipped_schema_is_what_the_command_prints() -> None:
    """`statemachine schema` prints ``schema_text()`` as it is (tests/integration runs the command)."""
    assert yaml_schema.schema_text() == SHIPPED.read_text(), (
        "docs/statemachine.schema.json is stale: statemachine schema > docs/statemachine.schema.json"
    )


def test_the_schema_is_a_valid_draft_7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema())


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.stem)
def test_every_definition_fits_the_schema_and_names_it(path: Path) -> None:
    assert path.read_text().splitlines()[0] == MODELINE
    data = yaml_source.parse_file(path).data
    assert [e.message for e in validator().iter_errors(data)] == []
    dumped = yaml.safe_load(load_yaml(path).to_yaml())  # what to_yaml writes is loadable YAML too
    assert [e.message for e in validator().iter_errors(dumped)] == []


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_every_broken_file_is_rejected(path: Path) -> None:
    data = yaml_source.parse_file(path).data
    assert list(validator().iter_errors(data)), f"{path.name} fits the schema"


# the schema and the loader agree on these: each accepted by both, or refused by both
SNIPPETS = {
    "snake_case keys": (
        True,
        "id: a\ndefault_retry: {max_attempts: 2, backoff_rate: 3}\nsteps:\n"
        "  - name: x\n    action: noop\n    max_retries: 1\n    retry_delay: 2s\n",
    ),
    "name beside id is the title": (
        True,
        "id: a\nname: A\nsteps:\n  - {id: x, name: X, action: noop}\n",
    ),
    "a trigger by name": (
        True,
        "id: a\ntriggers: [Order.placed]\nsteps:\n  - {id: x, action: noop}\n",
    ),
    "durations as numbers": (
        True,
        "id: a\ntimeout: 90\nsteps:\n  - {id: x, action: noop, wait: 1.5}\n",
    ),
    "fail-fast on a parallel": (
        True,
        "id: a\nsteps:\n  - id: p\n    type: parallel\n    onError: wait-all\n"
        "    branches:\n      - {name: b, steps: [{id: x, action: noop}]}\n",
    ),
    "a poll's check": (
        True,
        "id: a\nsteps:\n  - {id: p, type: poll, check: noop, interval: 1s, maxAttempts: 3}\n",
    ),
    "an unknown top-level key": (False, "id: a\nstepz: []\nsteps:\n  - {id: x, action: noop}\n"),
    "a step with no type and no action": (False, "id: a\nsteps:\n  - {id: x, next: y}\n"),
    "action on a wait step": (
        False,
        "id: a\nsteps:\n  - {id: w, type: wait, duration: 1s, action: noop}\n",
    ),
    "fail-fast on a task": (
        False,
        "id: a\nsteps:\n  - {id: x, action: noop, onError: fail-fast}\n",
    ),
    "a negative duration": (False, "id: a\nsteps:\n  - {id: x, action: noop, timeout: -5}\n"),
    "a duration in parsecs": (False, "id: a\nsteps:\n  - {id: x, action: noop, timeout: 5pc}\n"),
    "a bad trigger rule": (False, "id: a\nsteps:\n  - {id: x, action: noop, trigger: sometimes}\n"),
    "a bad parallel mode": (
        False,
        "id: a\nsteps:\n  - id: p\n    type: parallel\n    mode: first\n"
        "    branches:\n      - {name: b, steps: [{id: x, action: noop}]}\n",
    ),
    "maxRetries as text": (False, "id: a\nsteps:\n  - {id: x, action: noop, maxRetries: many}\n"),
    "no id": (False, "steps:\n  - {id: x, action: noop}\n"),
    "a retry policy's retryOn": (
        False,
        "id: a\nsteps:\n  - {id: x, action: noop, retry: {retryOn: [ValueError]}}\n",
    ),
    "an unnamed parallel branch": (
        False,
        "id: a\nsteps:\n  - id: p\n    type: parallel\n    branches:\n      - steps: [{id: x, action: noop}]\n",
    ),
}


@pytest.mark.parametrize("name", SNIPPETS)
def test_schema_and_loader_agree(name: str) -> None:
    valid, text = SNIPPETS[name]
    fits = not list(validator().iter_errors(yaml_source.parse_text(text).data))
    try:
        load_yaml(text)
        loads = True
    except DefinitionError:
        loads = False
    assert (fits, loads) == (valid, valid)


@given(
    st.one_of(
        st.text(alphabet="0123456789.mshdw x-", max_size=12),
        st.from_regex(r"\A *\d{1,3}(\.\d)? ?(ms|s|m|h|d|w)(\d{1,2}(ms|s|m|h|d|w))? *\Z"),
    )
)
def test_the_duration_pattern_is_the_parsers_syntax(text: str) -> None:
    try:
        parsed = durations.parse_duration(text) <= durations.MAX_SECONDS
    except durations.DurationSyntaxError as exc:
        parsed = "ten years" in str(exc)  # the pattern reads syntax, not size
    assert bool(re.search(yaml_schema.DURATION_PATTERN, text)) == parsed, text
