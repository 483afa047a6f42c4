"""What flow decisions read: the view of an instance from one step, and pure helpers on it.

Conditions, input mappers, transforms and ``until`` callables get a ``FlowView`` (the read-only
half of ``StepContext``); expressions get the same data as names.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import tenacity

from statemachine import errors
from statemachine.definition import expressions, models
from statemachine.runtime import jsondata
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State


@dataclass(frozen=True)
class FlowView:
    """Read-only data a step sees: workflow input, visible step outputs, ``prev``, metadata."""

    input: Any
    steps: Mapping[str, Any]
    prev: Any
    metadata: Mapping[str, Any]
    instance_id: str
    workflow_name: str
    step_name: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    event: Any = None  # the trigger's event data, for an instance started by ``emit``

    def names(self) -> dict[str, Any]:
        names: dict[str, Any] = {k: v for k, v in self.steps.items() if k.isidentifier()}
        names.update(
            input=self.input,
            steps=dict(self.steps),
            prev=self.prev,
            metadata=dict(self.metadata),
            event=self.event,
        )
        names.update(self.extra)
        return names


def visible_steps(plan: plans.Plan, state: State, path: str) -> dict[str, Any]:
    """Outputs by step name: enclosing scopes first, so the branch's own names win."""
    prefixes = [""]
    parts = path.split("/")
    for i in range(1, len(parts) - 1, 2):
        prefixes.append("/".join(parts[: i + 1]) + "/")
    out: dict[str, Any] = {}
    for prefix in prefixes:
        scope = plan.scope(prefix)
        if scope is None:
            continue
        for step in scope.steps:
            path = prefix + step.name
            st = state.peek(path)
            if st is not None and st.status == "completed":
                out[step.name] = st.output
            elif path in state.latest:  # running again: its previous result
                out[step.name] = state.latest[path]
    return out


class _VisibleSteps(Mapping[str, Any]):
    """``visible_steps``, worked out on first read: most steps never look at other steps'
    outputs, and collecting them costs time in proportion to the workflow's length."""

    __slots__ = ("_args", "_found")

    def __init__(self, plan: plans.Plan, state: State, path: str) -> None:
        self._args: tuple[plans.Plan, State, str] | None = (plan, state, path)
        self._found: dict[str, Any] = {}

    def _steps(self) -> dict[str, Any]:
        if self._args is not None:
            self._found, self._args = visible_steps(*self._args), None
        return self._found

    def __getitem__(self, name: str) -> Any:
        return self._steps()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._steps())

    def __len__(self) -> int:
        return len(self._steps())

    def __repr__(self) -> str:
        return repr(self._steps())


def prev_value(state: State, prev: str | None) -> Any:
    """What step ``prev`` passes on: its output, ``{"error": ...}`` if it failed, else None."""
    p = None if prev is None else state.peek(prev)
    if p is None:
        return None
    if p.status == "completed":
        return p.output
    if p.status == "failed":
        return {"error": p.error}
    return None


def prev_of(plan: plans.Plan, state: State, path: str, prev: str | None) -> Any:
    """What the step at ``path`` receives as ``prev``: the output of the step that led to it,
    else its scope's input (the workflow input at the top)."""
    if prev is not None:
        return prev_value(state, prev)
    node = plan.node(path)
    return state.input if node.scope.parent is None else _scope_input(plan, state, node)


def view(plan: plans.Plan, state: State, path: str, prev: str | None, instance_id: str) -> FlowView:
    return FlowView(
        input=state.input,
        steps=_VisibleSteps(plan, state, path),
        prev=prev_of(plan, state, path, prev),
        metadata=MappingProxyType(dict(state.metadata)),
        instance_id=instance_id,
        workflow_name=plan.definition.name,
        step_name=path,
        extra=map_names(state, path),
        event=state.trigger_event,
    )


def map_names(state: State, path: str) -> dict[str, Any]:
    """Inside a map's iterator, ``item`` and ``index`` name the current item (innermost map wins)."""
    names: dict[str, Any] = {}
    parts = path.split("/")
    for i in range(1, len(parts) - 1, 2):
        record = state.branches.get("/".join(parts[:i]), {}).get(parts[i], {})
        if "index" in record:
            names = {"item": record.get("item"), "index": record["index"]}
    return names


def _scope_input(plan: plans.Plan, state: State, node: plans.Node) -> Any:
    """A branch's input: what led to its parallel step (the workflow input at the very start)."""
    parent = state.steps.get(node.scope.parent or "")
    if parent is None:
        return state.input
    record = state.branches.get(parent.path, {}).get(node.scope.branch or "", {})
    if "index" in record:  # an item of a map: its input is the item
        return record.get("item")
    if parent.prev is None:
        container = plan.node(parent.path)
        return (
            state.input if container.scope.parent is None else _scope_input(plan, state, container)
        )
    return prev_value(state, parent.prev)


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


def poll_result(output: Any) -> tuple[bool, Any] | None:
    """``(done, result)`` of a poll check's ``{"done": bool, "result": ...}``; None for any
    other shape, which fails the step (``poll_shape_error``) rather than being guessed at:
    ``{"status": "pending"}``, ``{"done": "false"}`` or ``"not yet"`` once read as done."""
    if isinstance(output, Mapping) and isinstance(output.get("done"), bool):
        return output["done"], output.get("result")
    return None


def poll_shape_error(path: str, output: Any) -> dict[str, Any]:
    shown = json.dumps(output)  # stored output: JSON already
    if len(shown) > 200:
        shown = shown[:200] + "..."
    message = (
        f"the check of poll {path!r} returned {shown}; it must return "
        '{"done": true or false, "result": ...}'
    )
    return {"type": "InvalidPollResult", "message": message}


def retry_policy(
    definition: models.WorkflowDefinition, step: models.StepBase
) -> models.RetryPolicy | None:
    if isinstance(step, models.TaskStep):
        return step.retry or definition.default_retry
    return None


def retry_delay(policy: models.RetryPolicy, failures: int) -> float:
    """Ask tenacity's wait strategy for the delay after ``failures`` failed attempts;
    ``max_interval`` caps every delay, the first included."""
    wait = tenacity.wait_exponential(
        multiplier=policy.interval, exp_base=policy.backoff_rate, max=policy.max_interval, min=0
    )
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = failures
    return float(wait(state))


def retryable(policy: models.RetryPolicy | None, exc: BaseException) -> bool:
    if isinstance(exc, errors.CriticalError) or policy is None:
        return False
    if policy.retry_on is None:
        return True
    return isinstance(exc, policy.retry_on)


def names_for(view_: FlowView, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    names = view_.names()
    if extra:
        names.update(extra)
    return names
