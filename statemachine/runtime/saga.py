"""Compensation (saga): which completed steps to undo when an instance fails, and in what order."""

from __future__ import annotations

from statemachine.definition import models
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State

SUFFIX = "#compensate"


def compensation_path(path: str) -> str:
    return path + SUFFIX


def is_compensation(path: str) -> bool:
    return path.endswith(SUFFIX)


def base_path(path: str) -> str:
    return path[: -len(SUFFIX)] if is_compensation(path) else path


def compensations(plan: plans.Plan, state: State) -> list[str]:
    """Completed tasks that declared ``compensate``, newest completion first, each once."""
    out: list[str] = []
    for path in reversed(state.order):
        node = plan.nodes.get(path)
        if node is None or path in out:
            continue
        step = node.step
        done = state.steps.get(path)
        undoable = isinstance(step, models.TaskStep) and step.compensate is not None
        if undoable and done is not None and done.status == "completed":
            out.append(path)
    return out
