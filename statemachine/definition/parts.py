"""Frozen models of the parts of a workflow graph: steps, branches, retry policies, triggers.

Pure data, below everything that reads it (``graph``, ``render``, validation, the runtime);
``models`` adds the workflow itself and is where the rest of the package finds these names.
Expressions stay strings here (compiled by ``expressions``); callables are kept as given and
rendered by qualified name. Durations are seconds. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from statemachine.definition import durations, schedule_spec, schemas

OnError = Literal["fail", "continue", "branch"]
# Airflow's trigger rules, with Airflow's meaning (runtime/rules.py decides them)
TriggerRule = Literal[
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]
TRIGGER_RULES: tuple[str, ...] = get_args(TriggerRule)
DEFAULT_TRIGGER_RULE: TriggerRule = "none_failed_min_one_success"
STEP_TYPES: tuple[str, ...] = (
    "task",
    "choice",
    "parallel",
    "pass",
    "poll",
    "loop",
    "wait",
    "map",
    "subworkflow",
)

Fn = Callable[..., Any]
# module-level: inside step classes the name `type` is a field. A pydantic model, or a JSON
# Schema (a dict, as YAML gives it); ``schemas`` checks values against either.
Schema = type[BaseModel] | dict[str, Any]
ExprOrFn = str | Fn


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def sound_schema(cls: type[BaseModel], value: Any) -> Any:
    """Shared ``after`` validator: a JSON Schema given as a dict must itself be valid."""
    if isinstance(value, dict):
        problem = schemas.schema_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return value


def to_seconds(cls: type[BaseModel], value: Any) -> Any:
    """Shared ``before`` validator: any duration input becomes seconds."""
    return None if value is None else durations.parse_duration(value)


class RetryPolicy(Frozen):
    """How often and how patiently a step is retried; tenacity does the arithmetic at run time."""

    max_attempts: int = Field(default=3, ge=1, le=1000)
    interval: float = 1.0
    backoff_rate: float = Field(default=2.0, ge=1.0, le=100.0)
    max_interval: float = 30.0
    retry_on: tuple[type[BaseException], ...] | None = None

    _check_durations = field_validator("interval", "max_interval", mode="before")(to_seconds)


class Trigger(Frozen):
    event: str = Field(min_length=1)
    condition: str | None = None


Overlap = Literal["skip", "allow", "cancel_previous"]
Catchup = Literal["none", "latest", "all"]


class Schedule(Frozen):
    """When a workflow starts by itself: a cron expression or a fixed interval (seconds), read
    in ``timezone``; ``overlap`` says what a tick does while the schedule's previous instance
    still runs, ``catchup`` what happens to ticks missed while no engine ran (``schedules``)."""

    cron: str | None = None
    every: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    input: Any = None
    overlap: Overlap = "skip"
    catchup: Catchup = "none"

    _check_every = field_validator("every", mode="before")(to_seconds)

    @field_validator("every")
    @classmethod
    def _whole_seconds(cls, value: float | None) -> float | None:
        """A tick's instance id names its second: ticks closer or between seconds would share one."""
        if value is not None and (value < 1 or value != int(value)):
            raise ValueError(f"every must be a whole number of seconds, 1s or more, got {value:g}s")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else schedule_spec.check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return schedule_spec.check_timezone(value)

    @model_validator(mode="after")
    def _one_spec(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule takes exactly one of cron and every")
        return self

    @property
    def spec(self) -> str:
        """How people read it: the cron expression, or ``every 900s``."""
        return self.cron if self.cron is not None else f"every {self.every:g}s"

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``, in UTC."""
        return schedule_spec.next_tick(self.cron, self.every, self.timezone, after)


MAX_PRIORITY = 1_000_000  # priorities run from -MAX_PRIORITY to MAX_PRIORITY


class Concurrency(Frozen):
    """At most ``limit`` instances running per value of ``key`` (a ``${{ }}`` template over
    ``input``, rendered at start); without a key, at most ``limit`` of the workflow."""

    limit: int = Field(ge=1, le=1_000_000, strict=True)
    key: str | None = Field(default=None, min_length=1)

    @field_validator("key")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        """A bare expression (``input.customer``) is the template ``${{ input.customer }}``."""
        return value if value is None or "${{" in value else f"${{{{ {value.strip()} }}}}"


class ChoiceRule(Frozen):
    condition: ExprOrFn
    next: str


class StepBase(Frozen):
    name: str = Field(min_length=1)
    next: str | None = None
    end: bool = False
    on_error: OnError = "fail"
    error_next: str | None = None
    title: str | None = None
    description: str | None = None
    depends_on: tuple[str, ...] = ()
    condition: ExprOrFn | None = None
    trigger: TriggerRule = DEFAULT_TRIGGER_RULE
    delay: float | None = None

    _check_delay = field_validator("delay", mode="before")(to_seconds)

    @property
    def kind(self) -> str:
        return str(getattr(self, "type", "task"))


class TaskStep(StepBase):
    type: Literal["task"] = "task"
    handler: ExprOrFn
    input: Any = None
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    compensate: ExprOrFn | None = None

    _check_timeout = field_validator("timeout", mode="before")(to_seconds)
    _check_schemas = field_validator("input_schema", "output_schema")(sound_schema)


class ChoiceStep(StepBase):
    type: Literal["choice"] = "choice"
    choices: tuple[ChoiceRule, ...]
    default: str | None = None


class PassStep(StepBase):
    type: Literal["pass"] = "pass"
    result: Any = None
    transform: ExprOrFn | None = None


class PollStep(StepBase):
    type: Literal["poll"] = "poll"
    check: ExprOrFn
    input: Any = None
    interval: float
    timeout: float | None = None
    max_attempts: int | None = Field(default=None, ge=1)

    _check_durations = field_validator("interval", "timeout", mode="before")(to_seconds)


class LoopStep(StepBase):
    type: Literal["loop"] = "loop"
    condition: ExprOrFn  # the loop's "while" condition (a loop never sits in a DAG scope)
    target: str
    interval: float | None = None
    max_iterations: int | None = Field(default=None, ge=1)
    timeout: float | None = None

    _check_durations = field_validator("interval", "timeout", mode="before")(to_seconds)


class WaitStep(StepBase):
    type: Literal["wait"] = "wait"
    duration: float | None = None
    until: datetime | ExprOrFn | None = None
    event: str | None = None
    timeout: float | None = None

    _check_durations = field_validator("duration", "timeout", mode="before")(to_seconds)

    @field_validator("until", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        """A naive datetime is UTC; an ISO-8601 string is a time, any other string an expression."""
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                return value
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class SubworkflowStep(StepBase):
    type: Literal["subworkflow"] = "subworkflow"
    workflow: str = Field(min_length=1)
    input: Any = None


class Branch(Frozen):
    """A named sequence (or DAG) of steps: one branch of a parallel, or a map's iterator."""

    name: str = Field(min_length=1)
    steps: tuple[Step, ...]


class ParallelStep(StepBase):
    type: Literal["parallel"] = "parallel"
    branches: tuple[Branch, ...]
    mode: Literal["all", "race"] = "all"
    failure: Literal["fail-fast", "wait-all"] = "fail-fast"
    max_concurrency: int | None = Field(default=None, ge=1)


class MapStep(StepBase):
    type: Literal["map"] = "map"
    items: ExprOrFn
    iterator: Branch
    max_concurrency: int | None = Field(default=None, ge=1)


class BrokenStep(PassStep):
    """Stands in for a step whose own fields failed validation, keeping its name and the
    references that did validate, so the graph checks of the same pass still see it (one pass
    reports every problem). It never reaches a definition that loads: its issues are raised."""

    input: Any = None  # its templates are still checked


Step = Annotated[
    TaskStep
    | ChoiceStep
    | ParallelStep
    | PassStep
    | PollStep
    | LoopStep
    | WaitStep
    | MapStep
    | SubworkflowStep,
    Field(discriminator="type"),
]


def child_branches(step: StepBase) -> tuple[Branch, ...]:
    if isinstance(step, ParallelStep):
        return step.branches
    if isinstance(step, MapStep):
        return (step.iterator,)
    return ()


def walk_steps(steps: tuple[StepBase, ...], prefix: str) -> Iterator[tuple[str, StepBase]]:
    for step in steps:
        path = f"{prefix}{step.name}"
        yield path, step
        for br in child_branches(step):
            yield from walk_steps(br.steps, f"{path}/{br.name}/")


Branch.model_rebuild()
ParallelStep.model_rebuild()
MapStep.model_rebuild()
