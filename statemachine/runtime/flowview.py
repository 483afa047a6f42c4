"""What a step sees of its instance: ``FlowView``, and the values it is built from.

Conditions, input mappers, transforms and ``until`` callables get a ``FlowView`` (the read-only
half of ``StepContext``); expressions get the same data as names (``FlowView.names``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from statemachine.runtime.plan import Node, Plan
from statemachine.runtime.state import State
from statemachine.vocabulary import StepStatus


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


def visible_steps(plan: Plan, state: State, path: str) -> dict[str, Any]:
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
            if st is not None and st.status == StepStatus.COMPLETED:
                out[step.name] = st.output
            elif path in state.latest:  # running again: its previous result
                out[step.name] = state.latest[path]
    return out


class _VisibleSteps(Mapping[str, Any]):
    """``visible_steps``, worked out on first read: most steps never look at other steps'
    outputs, and collecting them costs time in proportion to the workflow's length."""

    __slots__ = ("_args", "_found")

    def __init__(self, plan: Plan, state: State, path: str) -> None:
        self._args: tuple[Plan, State, str] | None = (plan, state, path)
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
    if p.status == StepStatus.COMPLETED:
        return p.output
    if p.status == StepStatus.FAILED:
        return {"error": p.error}
    return None


def prev_of(plan: Plan, state: State, path: str, prev: str | None) -> Any:
    """What the step at ``path`` receives as ``prev``: the output of the step that led to it,
    else its scope's input (the workflow input at the top)."""
    if prev is not None:
        return prev_value(state, prev)
    node = plan.node(path)
    return state.input if node.scope.parent is None else _scope_input(plan, state, node)


def view(plan: Plan, state: State, path: str, prev: str | None, instance_id: str) -> FlowView:
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


def _scope_input(plan: Plan, state: State, node: Node) -> Any:
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
