"""What the flow check reads from a step (its expressions and templates) and how it words a
mismatch: both steps, the field, its type, and what the other side has, with a "did you mean"."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine import errors
from statemachine.definition import expressions, issues, models
from statemachine.definition import flow_shapes as shapes

Loc = issues.Loc
CODE = "data_flow"


@dataclass(frozen=True)
class Source:
    """Where data comes from: ``who`` for messages ("'validate'", "the workflow input"), its
    shape (None: unknown, never an error) and how a message names its schema (``has``)."""

    who: str
    shape: shapes.Shape | None
    has: str


def _issue(loc: Loc, message: str) -> errors.Issue:
    return errors.Issue(message=message, location=issues.format_loc(loc), code=CODE)


def _listing(names: Any) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "no fields"


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1].removesuffix("[]")


# --- what a step reads ----------------------------------------------------------------------


def whole_template(text: str) -> expressions.Expression | None:
    """The one expression of a template that is nothing else (its value keeps its type)."""
    try:
        template = expressions.compile_template(text)
    except errors.ExpressionError:
        return None
    stripped = text.strip()
    if len(template.expressions) == 1 and stripped.startswith("${{") and stripped.endswith("}}"):
        return template.expressions[0]
    return None


def _expression(source: Any, loc: Loc) -> Iterator[tuple[Loc, str, ast.expr]]:
    if isinstance(source, str):
        try:
            yield loc, source, expressions.compile_expression(source).tree
        except errors.ExpressionError:
            return  # validation reports it


def _templates(value: Any, loc: Loc) -> Iterator[tuple[Loc, str, ast.expr]]:
    if isinstance(value, str) and expressions.is_template(value):
        try:
            template = expressions.compile_template(value)
        except errors.ExpressionError:
            return
        for part in template.expressions:
            yield loc, value, part.tree
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from _templates(child, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for j, child in enumerate(value):
            yield from _templates(child, (*loc, j))


def _is_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def expressions_of(step: models.StepBase, loc: Loc) -> Iterator[tuple[Loc, str, ast.expr]]:
    """Every expression ``step`` evaluates, with where it was written and its text."""
    yield from _expression(step.condition, (*loc, "condition"))
    if isinstance(step, models.ChoiceStep):
        for k, rule in enumerate(step.choices):
            yield from _expression(rule.condition, (*loc, "choices", k, "condition"))
    elif isinstance(step, models.MapStep):
        yield from _expression(step.items, (*loc, "items"))
    elif isinstance(step, models.BrokenStep):
        yield from _templates(step.input, (*loc, "input"))
    elif isinstance(step, models.PassStep):
        yield from _expression(step.transform, (*loc, "transform"))
        yield from _templates(step.result, (*loc, "result"))
    elif isinstance(step, models.WaitStep):
        if isinstance(step.until, str) and not _is_timestamp(step.until):
            yield from _expression(step.until, (*loc, "until"))
    elif isinstance(step, models.TaskStep | models.PollStep | models.SubworkflowStep):
        yield from _templates(step.input, (*loc, "input"))


# --- messages -------------------------------------------------------------------------------


def _verb(src: Source) -> str:
    return "does not output" if src.who.startswith("'") else "does not have"


def edge(step: str, src: Source, gap: shapes.Gap, loc: Loc) -> errors.Issue:
    """``step`` receives ``src``'s data as it is, and the data does not fit."""
    need = shapes.describe(gap.need)
    if gap.kind == "missing":
        hint = issues.did_you_mean(_leaf(gap.path), gap.have_fields)
        msg = (
            f"step {step!r} needs field {gap.path!r} ({need}), which {src.who} {_verb(src)} "
            f"({src.has} has: {_listing(gap.have_fields)}){hint}"
        )
    elif gap.kind == "optional":
        msg = (
            f"step {step!r} needs field {gap.path!r} ({need}), which {src.who} may leave out "
            f"(it is optional in {src.has}: list it under required)"
        )
    elif gap.kind == "extra":
        msg = (
            f"step {step!r} does not accept field {gap.path!r} (its inputSchema allows no "
            f"other fields), which {src.who} outputs"
        )
    else:
        have = shapes.describe(gap.have) if gap.have is not None else "any value"
        what = f"field {gap.path!r}" if gap.path else "its input"
        msg = f"step {step!r} needs {what} as {need}, but {src.who} gives {have}"
    return _issue(loc, msg)


def mapping(step: str, value: Any, gap: shapes.Gap, loc: Loc) -> errors.Issue:
    """``step``'s own ``input`` mapping builds an object that does not fit its schema."""
    need = shapes.describe(gap.need)
    top = gap.path.split(".")[0].split("[")[0]
    sets = value if isinstance(value, Mapping) else {}
    at = (*loc, top) if top in sets else loc
    if gap.kind == "missing":
        hint = issues.did_you_mean(_leaf(gap.path), gap.have_fields)
        msg = (
            f"step {step!r} needs field {gap.path!r} ({need}), which its input mapping does "
            f"not set (it sets: {_listing(gap.have_fields)}){hint}"
        )
    elif gap.kind == "optional":
        msg = f"step {step!r} needs field {gap.path!r} ({need}), which its input mapping may leave out"
    elif gap.kind == "extra":
        msg = f"step {step!r} does not accept field {gap.path!r} (its inputSchema allows no other fields)"
    else:
        have = shapes.describe(gap.have) if gap.have is not None else "any value"
        what = f"field {gap.path!r}" if gap.path else "its input"
        written = sets.get(top) if top in sets else value
        shown = f" ({written!r})" if isinstance(written, str) and "${{" in written else ""
        msg = f"step {step!r} needs {what} as {need}, but its input mapping gives {have}{shown}"
    return _issue(at, msg)


def unknown_field(
    src: Source,
    before: tuple[Any, ...],
    key: Any,
    shape: shapes.Shape,
    text: str,
    loc: Loc,
) -> errors.Issue:
    """An expression reads a field its source's schema proves absent (it would read null)."""
    known = shapes.fields(shape) or {}
    whose = src.who if src.who.startswith(("the ", "an ")) else f"the output of {src.who}"
    label = ".".join(str(k) for k in (*before, key))
    hint = issues.did_you_mean(str(key), known)
    where = f" at {'.'.join(map(str, before))}" if before else ""
    msg = (
        f"unknown field {label!r} of {whose} in {text!r} "
        f"({src.has}{where} has: {_listing(known)}){hint}"
    )
    return _issue(loc, msg)
