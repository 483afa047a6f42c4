"""A step's expressions and callables evaluated against its view: conditions, choices, task
inputs, pass transforms, map items and ``until``.

They must be pure (the interpreter runs them while deciding); a failure of any is an
``ExpressionError``, which fails the step they belong to.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from statemachine import errors
from statemachine.definition import expressions, models
from statemachine.runtime import jsondata
from statemachine.runtime.flowview import FlowView


def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call with as many positional arguments as ``fn`` accepts."""
    try:
        params = inspect.signature(fn).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_all = any(p.kind == p.VAR_POSITIONAL for p in params)
        count = len(args) if takes_all else min(len(args), len(positional))
    except (TypeError, ValueError):
        count = len(args)
    return fn(*args[:count])


def evaluate(value: models.ExprOrFn, view_: FlowView, *, what: str) -> Any:
    if isinstance(value, str):
        return expressions.compile_expression(value).evaluate(view_.names())
    try:
        return call_user(value, view_)
    except errors.StatemachineError:
        raise
    except Exception as exc:
        raise errors.ExpressionError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def condition(value: models.ExprOrFn, view_: FlowView, *, what: str) -> bool:
    if isinstance(value, str):
        return expressions.compile_expression(value).evaluate_condition(view_.names())
    result = evaluate(value, view_, what=what)
    if not isinstance(result, bool):
        raise errors.ExpressionError(
            f"{what} returned {type(result).__name__}, expected True or False"
        )
    return result


def condition_with_values(
    value: models.ExprOrFn, view_: FlowView, *, what: str
) -> tuple[bool, dict[str, Any]]:
    """The result plus the values of the names it read, for history ("why was this skipped")."""
    ok = condition(value, view_, what=what)
    if not isinstance(value, str):
        return ok, {}
    names = view_.names()
    read = expressions.compile_expression(value).names
    return ok, {n: names.get(n) for n in sorted(read)}


def describe(value: models.ExprOrFn) -> str:
    return value if isinstance(value, str) else getattr(value, "__qualname__", repr(value))


def choose(step: models.ChoiceStep, view_: FlowView) -> str | None:
    for i, rule in enumerate(step.choices):
        if condition(rule.condition, view_, what=f"choice {i} of {view_.step_name!r}"):
            return rule.next
    return step.default


def map_items(step: models.MapStep, view_: FlowView) -> list[Any]:
    """The items a map step runs its iterator on: a list of JSON values."""
    value = evaluate(step.items, view_, what=f"items of {view_.step_name!r}")
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise errors.ExpressionError(
            f"items of {view_.step_name!r} gave {type(value).__name__}, expected a list"
        )
    try:
        return list(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise errors.ExpressionError(
            f"items of {view_.step_name!r} are not JSON data: {exc}"
        ) from None


def task_input(
    step: models.TaskStep | models.PollStep | models.SubworkflowStep, view_: FlowView
) -> Any:
    if step.input is None:
        return jsondata.copy_json(view_.prev)
    if callable(step.input):
        try:
            return call_user(
                step.input, jsondata.copy_json(view_.prev), jsondata.copy_json(view_.input)
            )
        except errors.StatemachineError:
            raise
        except Exception as exc:
            raise errors.ExpressionError(
                f"input of {view_.step_name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
    return expressions.render_value(step.input, view_.names())


def pass_output(step: models.PassStep, view_: FlowView) -> Any:
    if step.transform is not None:
        return evaluate(step.transform, view_, what=f"transform of {view_.step_name!r}")
    if step.result is not None:
        return expressions.render_value(step.result, view_.names())
    return view_.prev


def until(step: models.WaitStep, view_: FlowView) -> datetime:
    value = step.until
    if not isinstance(value, datetime) and value is not None:
        value = evaluate(value, view_, what=f"until of {view_.step_name!r}")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise errors.ExpressionError(
                f"until of {view_.step_name!r} gave {value!r}, not an ISO-8601 time"
            ) from exc
    if not isinstance(value, datetime):
        raise errors.ExpressionError(
            f"until of {view_.step_name!r} gave {type(value).__name__}, expected a datetime"
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)
