"""The workflow definition: the one neutral form both the builder and YAML produce.

Its parts (steps, branches, retry policies, triggers) are pure data in ``parts`` and are named
here too, so the package reads every model from one place. The definition sits above ``render``
(parts <- graph <- render <- models): its dumps and its hash are its own methods, and nothing it
is built from imports it. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from statemachine.definition import render
from statemachine.definition.parts import DEFAULT_TRIGGER_RULE as DEFAULT_TRIGGER_RULE
from statemachine.definition.parts import (
    MAX_PRIORITY,
    Fn,
    Frozen,
    sound_schema,
    to_seconds,
    walk_steps,
)
from statemachine.definition.parts import STEP_TYPES as STEP_TYPES
from statemachine.definition.parts import TRIGGER_RULES as TRIGGER_RULES
from statemachine.definition.parts import Branch as Branch
from statemachine.definition.parts import BrokenStep as BrokenStep
from statemachine.definition.parts import Catchup as Catchup
from statemachine.definition.parts import ChoiceRule as ChoiceRule
from statemachine.definition.parts import ChoiceStep as ChoiceStep
from statemachine.definition.parts import Concurrency as Concurrency
from statemachine.definition.parts import ExprOrFn as ExprOrFn
from statemachine.definition.parts import LoopStep as LoopStep
from statemachine.definition.parts import MapStep as MapStep
from statemachine.definition.parts import Overlap as Overlap
from statemachine.definition.parts import ParallelStep as ParallelStep
from statemachine.definition.parts import PassStep as PassStep
from statemachine.definition.parts import PollStep as PollStep
from statemachine.definition.parts import RetryPolicy as RetryPolicy
from statemachine.definition.parts import Schedule as Schedule
from statemachine.definition.parts import Schema as Schema
from statemachine.definition.parts import Step as Step
from statemachine.definition.parts import StepBase as StepBase
from statemachine.definition.parts import SubworkflowStep as SubworkflowStep
from statemachine.definition.parts import TaskStep as TaskStep
from statemachine.definition.parts import Trigger as Trigger
from statemachine.definition.parts import WaitStep as WaitStep
from statemachine.definition.parts import child_branches as child_branches


class WorkflowDefinition(Frozen):
    """A validated, immutable workflow graph; ``hash`` identifies its content, whatever the source."""

    name: str = Field(min_length=1)
    version: str = "1"
    title: str | None = None
    description: str | None = None
    timeout: float | None = None
    default_retry: RetryPolicy | None = None
    triggers: tuple[Trigger, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    steps: tuple[Step, ...]
    on_complete: Fn | None = None
    input_schema: Schema | None = None
    concurrency: Concurrency | None = None
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, strict=True)
    source_path: str | None = Field(default=None, exclude=True)

    _hash: str = PrivateAttr(default="")

    _check_timeout = field_validator("timeout", mode="before")(to_seconds)
    _check_schema = field_validator("input_schema")(sound_schema)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )

    @model_validator(mode="after")
    def _compute_hash(self) -> WorkflowDefinition:
        canonical = json.dumps(
            render.to_dict(self), sort_keys=True, separators=(",", ":"), default=str
        )
        object.__setattr__(self, "_hash", hashlib.sha256(canonical.encode()).hexdigest()[:16])
        return self

    @property
    def hash(self) -> str:
        return self._hash

    def walk(self) -> Iterator[tuple[str, StepBase]]:
        """Every step with its path (``fulfill/shipping/ship``), parents before children."""
        yield from walk_steps(self.steps, "")

    def step_index(self) -> Mapping[str, StepBase]:
        return dict(self.walk())

    def to_dict(self) -> dict[str, Any]:
        return render.to_dict(self)

    def to_yaml(self) -> str:
        return render.to_yaml(self)

    def to_mermaid(self) -> str:
        return render.to_mermaid(self)

    def to_dot(self) -> str:
        return render.to_dot(self)


WorkflowDefinition.model_rebuild()
