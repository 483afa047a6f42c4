"""Flow control a definition declares: its concurrency key, checked at load, rendered at start.

The key is a ``${{ }}`` template over ``input`` only: it is computed once, when the instance is
created, and stored with it, so every worker counts the same slots whatever it has registered.
"""

from __future__ import annotations

import json

from statemachine import errors
from statemachine.definition import expressions, issues, models

KEY_NAMES = frozenset({"input"})  # what a concurrency key may read: nothing else exists at start
KEY_LENGTH = 200  # the stored key's column length


def issues_of(definition: models.WorkflowDefinition) -> list[errors.Issue]:
    """The key's problems: a template that does not compile, or a name other than ``input``."""
    limit = definition.concurrency
    if limit is None or limit.key is None:
        return []
    loc = issues.format_loc(("concurrency", "key"))
    try:
        template = expressions.compile_template(limit.key)
    except errors.ExpressionError as exc:
        return [errors.Issue(message=str(exc), location=loc, code="bad_expression")]
    return [
        errors.Issue(
            message=f"unknown name {name!r} in the concurrency key {limit.key!r}: it may only "
            f"read input{issues.did_you_mean(name, KEY_NAMES)}",
            location=loc,
            code="unknown_name",
        )
        for name in sorted(template.names - KEY_NAMES)
    ]


def concurrency_key(definition: models.WorkflowDefinition, data: object) -> str | None:
    """The instance's key: None without a limit, "" for a limit without a key (one group)."""
    limit = definition.concurrency
    if limit is None:
        return None
    if limit.key is None:
        return ""
    try:
        value = expressions.compile_template(limit.key).render({"input": data})
    except errors.ExpressionError as exc:
        raise errors.InputValidationError(
            f"the concurrency key {limit.key!r} of workflow {definition.name!r} cannot be "
            f"computed from this input: {exc}"
        ) from None
    if value is None:
        raise errors.InputValidationError(
            f"the concurrency key {limit.key!r} of workflow {definition.name!r} is null for "
            "this input: give the value it reads"
        )
    key = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(key) > KEY_LENGTH:
        raise errors.InputValidationError(
            f"the concurrency key of workflow {definition.name!r} is {len(key)} characters "
            f"long; at most {KEY_LENGTH}"
        )
    return key
