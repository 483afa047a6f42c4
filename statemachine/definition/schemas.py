"""Data schemas of inputs and outputs: a pydantic model (builder) or a JSON Schema (YAML or builder).

One place answers "does this value fit that schema?" for both forms, so the engine (workflow
input), the executor (a step's input and output) and the loader (is the schema itself sound?)
never branch on the form. jsonschema is imported on first use: most definitions have no schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from statemachine import errors
from statemachine.definition.issues import format_loc

JsonSchema = dict[str, Any]
SchemaLike = type[BaseModel] | JsonSchema

_MAX_REPORTED = 5  # problems listed in one message; the rest are counted


class Mismatch(ValueError):
    """A value does not fit its schema; ``problems`` are ``{loc, msg, type}`` like pydantic's."""

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems

    def issues(self, root: str) -> list[errors.Issue]:
        """One ``Issue`` per problem, located under ``root`` (the argument the value came in,
        e.g. ``input.customer.email``) and coded by the validator's error type, so callers
        read input problems the way they read definition problems."""
        return [
            errors.Issue(
                message=str(p["msg"]),
                location=format_loc((root, *p["loc"])),
                code=str(p["type"]),
            )
            for p in self.problems
        ]


def schema_problem(schema: JsonSchema) -> str | None:
    """Why ``schema`` is not a usable JSON Schema (None when it is), for an error at load time."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
    return None


def label(schema: SchemaLike) -> str:
    """How a message names the schema: the model's class name, or the JSON Schema's title."""
    if isinstance(schema, dict):
        return str(schema.get("title") or "its JSON Schema")
    return schema.__name__


def conform(value: Any, schema: SchemaLike) -> Any:
    """``value`` checked against ``schema``: a model instance for a pydantic model, the value
    itself for a JSON Schema. Raises ``Mismatch`` saying every problem found."""
    if isinstance(schema, dict):
        return _json_schema(value, schema)
    if isinstance(value, schema):
        return value
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        problems = [dict(e) for e in exc.errors(include_url=False, include_context=False)]
        raise Mismatch(str(exc), problems) from None


def _json_schema(value: Any, schema: JsonSchema) -> Any:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if not found:
        return value
    problems = [
        {"loc": tuple(e.absolute_path), "msg": e.message, "type": str(e.validator)} for e in found
    ]
    lines = [
        f"{'.'.join(map(str, p['loc'])) or '(the value)'}: {p['msg']}"
        for p in problems[:_MAX_REPORTED]
    ]
    if len(problems) > _MAX_REPORTED:
        lines.append(f"... and {len(problems) - _MAX_REPORTED} more")
    raise Mismatch("; ".join(lines), problems)
