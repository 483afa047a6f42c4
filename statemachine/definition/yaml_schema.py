"""The JSON Schema of the YAML format, built from the key tables the loader reads with (yaml_keys).

``statemachine schema`` prints it and ``docs/statemachine.schema.json`` ships it, so an editor
(``# yaml-language-server: $schema=...``) completes keys and flags an unknown key, a bad enum
value, a malformed duration or a wrong type as the author types. It is generated, not written:
a key the loader learns, a step type or a trigger rule the models gain, is in the schema at
once. What only the loader can see (references between steps, expressions, cycles, actions)
stays with ``statemachine validate``.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from statemachine.definition import durations, models, yaml_keys
from statemachine.definition.parts import MAX_PRIORITY

Schema = dict[str, Any]

#: keys the loader knows only to refuse them: they name Python objects, not data
NOT_IN_YAML = frozenset({"handler", "onComplete", "retryOn"})
#: the loader's inline key sets (yaml_reader's Reader.branch, .choices, .triggers)
BRANCH_KEYS = ("id", "steps")
CHOICE_KEYS = ("condition", "next")
TRIGGER_KEYS = ("event", "condition")

_NUMBER = r"\d(?: *\d)*(?: *\. *\d(?: *\d)*)?"  # durations.py drops every inner space
_UNIT = r"(?:m *s|s|m|h|d|w)"
DURATION_PATTERN = rf"^\s*(?:{_NUMBER}|(?:{_NUMBER} *{_UNIT} *)+)\s*$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


def _enum(values: tuple[str, ...] | list[str], description: str) -> Schema:
    return {"type": "string", "enum": list(values), "description": description}


def _literal(step: type[models.StepBase], field: str) -> tuple[str, ...]:
    """The values of a ``Literal`` field of a step model (mode, failure)."""
    return tuple(get_args(step.model_fields[field].annotation))


def spellings(key: str) -> list[str]:
    """Every way a canonical key may be written: itself, then its aliases (snake_case, older names)."""
    return [key, *sorted(a for a, c in yaml_keys.ALIASES.items() if c == key and a != key)]


def _described(schema: Schema, description: str) -> Schema:
    """A description beside a ``$ref`` (draft-07 ignores siblings of ``$ref``, so wrap it)."""
    if "$ref" in schema:
        return {"description": description, "allOf": [schema]}
    return {**schema, "description": description}


def _values() -> dict[str, Schema]:
    """Canonical key -> the schema of its value, with the line an editor shows on hover."""
    text = {"type": "string", "minLength": 1}
    expression = {"type": "string", "minLength": 1}
    anything: Schema = {}
    json_schema = {"type": "object"}
    count = {"type": "integer", "minimum": 1}
    table: dict[str, tuple[Schema, str]] = {
        "id": (text, "name of the workflow or step (`name:` alone also names it)"),
        "title": ({"type": "string"}, "display title (also `name:` beside `id:`)"),
        "description": ({"type": "string"}, "free text"),
        "version": ({"type": ["string", "integer", "number"]}, "version label, default 1"),
        "timeout": (
            _ref("duration"),
            "time limit (whole workflow, step, poll, loop or event wait)",
        ),
        "defaultRetry": (_ref("retry"), "retry policy of every task without its own"),
        "triggers": (
            {"type": "array", "items": _ref("trigger")},
            "events that start this workflow (engine.emit)",
        ),
        "schedules": (
            {"type": "array", "items": _ref("schedule")},
            "when the workflow starts by itself (cron or every)",
        ),
        "steps": ({"type": "array", "minItems": 1, "items": _ref("step")}, "the steps, in order"),
        "inputSchema": (json_schema, "JSON Schema the input must fit"),
        "outputSchema": (json_schema, "JSON Schema the task's output must fit"),
        "type": (
            _enum(models.STEP_TYPES, "kind of step"),
            "kind of step; task when omitted and action is given",
        ),
        "next": (text, "step to go to next (sequential scope)"),
        "end": ({"type": "boolean"}, "the workflow (or branch) ends after this step"),
        "onError": (
            _enum(yaml_keys.ON_ERROR, "what a failure does"),
            "fail (default), continue, branch (to errorBranch), retry; "
            "on a parallel step fail-fast or wait-all",
        ),
        "errorBranch": (text, "step to run when this one fails (onError: branch)"),
        "dependsOn": (
            {"type": "array", "items": text},
            "steps this one waits for (DAG scope)",
        ),
        "condition": (
            expression,
            "expression: false skips the step; a loop repeats while it holds; "
            "a choice rule or trigger matches when it holds",
        ),
        "trigger": (
            _enum(models.TRIGGER_RULES, "DAG trigger rule"),
            "when a DAG step runs, from its dependencies' outcomes",
        ),
        "wait": (_ref("duration"), "durable delay before the step runs"),
        "action": (text, "name of a registered action (a task's handler, a poll's check)"),
        "check": (text, "a poll's action (same as action:)"),
        "input": (anything, "the step's input; ${{ expr }} strings are expressions"),
        "retry": (_ref("retry"), "the task's retry policy"),
        "maxRetries": (
            {"type": "integer", "minimum": 0},
            "retries after the first try (maxAttempts - 1)",
        ),
        "retryDelay": (_ref("duration"), "first retry interval"),
        "compensate": (text, "action that undoes the task when the workflow fails (saga)"),
        "choices": (
            {"type": "array", "minItems": 1, "items": _ref("choice")},
            "rules tried in order; the first whose condition holds picks next",
        ),
        "default": (text, "step to go to when no choice matches"),
        "branches": (
            {"type": "array", "minItems": 1, "items": _ref("namedBranch")},
            "branches run side by side",
        ),
        "mode": (
            _enum(_literal(models.ParallelStep, "mode"), "parallel mode"),
            "all: wait for every branch; race: the first branch to succeed wins",
        ),
        "failure": (
            _enum(_literal(models.ParallelStep, "failure"), "parallel failure policy"),
            "fail-fast cancels the other branches on the first failure; wait-all lets them finish",
        ),
        "maxConcurrency": (count, "most branches or items running at once"),
        "result": (anything, "static output of a pass step"),
        "transform": (expression, "expression whose value is the pass step's output"),
        "interval": (_ref("duration"), "time between checks, loop passes, or retries"),
        "maxAttempts": (count, "most checks of a poll (or attempts of a retry policy)"),
        "target": (text, "earlier step a loop jumps back to"),
        "maxIterations": (count, "most passes of a loop"),
        "duration": (_ref("duration"), "how long a wait step waits"),
        "until": (
            {"type": "string", "minLength": 1},
            "ISO-8601 time, or an expression giving one, a wait step waits for",
        ),
        "event": (text, "event name (a wait step's event, a trigger's event)"),
        "items": (expression, "expression giving the list a map step iterates"),
        "iterator": (_ref("branch"), "the steps run once per item"),
        "workflow": (text, "registered workflow a subworkflow step starts as a child"),
        "backoffRate": (
            {"type": "number", "minimum": 1, "maximum": 100},
            "each delay is the previous one times this",
        ),
        "maxInterval": (_ref("duration"), "cap of every retry delay"),
        "concurrency": (
            {
                "type": "object",
                "properties": {
                    "limit": _described(count, "most running instances per key value"),
                    "key": _described(expression, "${{ }} template over input; none: one group"),
                },
                "required": ["limit"],
                "additionalProperties": False,
            },
            "at most limit running instances per key; the others wait as pending",
        ),
        "priority": (
            {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY},
            "default priority of its instances: higher ones are claimed first",
        ),
    }
    return {key: _described(schema, line) for key, (schema, line) in table.items()}


def _properties(
    keys: set[str] | tuple[str, ...], overrides: dict[str, Schema] | None = None
) -> Schema:
    values = {**_values(), **(overrides or {})}
    out: Schema = {}
    for key in sorted(k for k in keys if k not in NOT_IN_YAML):
        if key not in values:
            raise KeyError(f"yaml_schema has no value schema for the YAML key {key!r}")
        for spelling in spellings(key):
            out[spelling] = values[key]
    return out


def _named() -> Schema:
    return {"anyOf": [{"required": ["id"]}, {"required": ["name"]}]}


def _allowed(kind: str) -> list[str]:
    keys = yaml_keys.COMMON | yaml_keys.OWN[kind]
    return sorted(s for k in keys - NOT_IN_YAML for s in spellings(k))


def _per_type() -> list[Schema]:
    """``type`` decides the keys a step may have; a step without one is a task (action: required)."""
    parallel_only = [v for v in yaml_keys.ON_ERROR if v in _literal(models.ParallelStep, "failure")]
    others = [v for v in yaml_keys.ON_ERROR if v not in parallel_only]
    rules: list[Schema] = []
    for kind in yaml_keys.OWN:
        then: Schema = {"propertyNames": {"enum": _allowed(kind)}}
        if kind != "parallel":
            then["properties"] = {s: {"enum": others} for s in spellings("onError")}
        rules.append(
            {"if": {"required": ["type"], "properties": {"type": {"const": kind}}}, "then": then}
        )
    rules.append(
        {
            "if": {"not": {"required": ["type"]}},
            "then": {
                "required": ["action"],
                "propertyNames": {"enum": _allowed("task")},
                "properties": {s: {"enum": others} for s in spellings("onError")},
            },
        }
    )
    return rules


def _definitions() -> Schema:
    step_keys = yaml_keys.COMMON.union(*yaml_keys.OWN.values())
    retry_attempts = {"type": "integer", "minimum": 1, "maximum": 1000}
    return {
        "duration": {
            "description": "seconds, or text such as 250ms, 30s, 5m, 1h30m, 3d, 1w",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": durations.MAX_SECONDS},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
        },
        "retry": {
            "description": "retry policy: attempts and the delays between them",
            "type": "object",
            "properties": _properties(
                tuple(yaml_keys.RETRY_KEYS),
                {"maxAttempts": _described(retry_attempts, "attempts, the first included")},
            ),
            "additionalProperties": False,
        },
        "trigger": {
            "anyOf": [
                {"type": "string", "minLength": 1, "description": "event name"},
                {
                    "type": "object",
                    "properties": _properties(TRIGGER_KEYS),
                    "required": ["event"],
                    "additionalProperties": False,
                },
            ]
        },
        "schedule": {
            "type": "object",
            "properties": _properties(
                tuple(yaml_keys.SCHEDULE_KEYS),
                {
                    "cron": {"type": "string", "description": "cron expression, e.g. '0 2 * * *'"},
                    "every": _described(_ref("duration"), "fixed interval, e.g. 15m"),
                    "timezone": {"type": "string", "description": "IANA time zone, default UTC"},
                    "overlap": _enum(["skip", "allow", "cancel_previous"], "while one runs"),
                    "catchup": _enum(["none", "latest", "all"], "ticks missed meanwhile"),
                },
            ),
            "additionalProperties": False,
        },
        "choice": {
            "type": "object",
            "properties": _properties(CHOICE_KEYS),
            "required": list(CHOICE_KEYS),
            "additionalProperties": False,
        },
        "branch": {
            "type": "object",
            "properties": _properties(BRANCH_KEYS),
            "required": ["steps"],
            "additionalProperties": False,
        },
        "namedBranch": {"allOf": [_ref("branch"), _named()]},
        "step": {
            "type": "object",
            "properties": _properties(step_keys),
            "additionalProperties": False,
            **_named(),
            "allOf": _per_type(),
        },
    }


def yaml_schema() -> Schema:
    """The JSON Schema (draft-07, what YAML editors read) of one workflow definition file."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "statemachine workflow definition",
        "description": (
            "A workflow in YAML (docs/yaml.md). Keys may be camelCase or snake_case. This "
            "schema sees keys, types, enums and durations; statemachine validate also checks "
            "references, expressions and the graph."
        ),
        "type": "object",
        "properties": _properties(yaml_keys.TOP_KEYS),
        "required": ["steps"],
        "additionalProperties": False,
        **_named(),
        "definitions": _definitions(),
    }


def schema_text() -> str:
    """The schema as ``statemachine schema`` prints it and ``docs/statemachine.schema.json`` holds."""
    return json.dumps(yaml_schema(), indent=2) + "\n"
