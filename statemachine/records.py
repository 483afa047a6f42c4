"""Read models handed to users: instances, step results, history entries (frozen snapshots)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from statemachine.vocabulary import TERMINAL, InstanceStatus, StepStatus

__all__ = [
    "STATUSES",
    "TERMINAL",
    "HistoryEntry",
    "InstanceStatus",
    "ScheduleInfo",
    "StepResult",
    "StepStatus",
    "WorkflowInstance",
]

STATUSES: tuple[str, ...] = tuple(InstanceStatus)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class StepResult(_Record):
    step_name: str
    status: StepStatus
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    iteration: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    next_attempt_at: datetime | None = None
    #: why a skipped step did not run: ``{"kind": "condition" | "trigger_rule" |
    #: "error_branch_not_taken", ...}`` (a trigger rule's skip also names the rule, the
    #: dependencies' states and whether it counts as ``upstream_failed``); else None
    reason: dict[str, Any] | None = None


class WorkflowInstance(_Record):
    id: str
    workflow_name: str
    workflow_version: str
    definition_hash: str
    status: InstanceStatus
    current_step: str | None = None
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    step_results: dict[str, StepResult] = {}
    metadata: dict[str, Any] = {}
    parent_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    wake_at: datetime | None = None
    priority: int = 0  # claimed before instances of lower priority
    concurrency_key: str | None = None  # its slot group under the definition's concurrency

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class HistoryEntry(_Record):
    seq: int
    at: datetime
    type: str
    step: str | None = None
    data: dict[str, Any] = {}


class ScheduleInfo(_Record):
    """One schedule of a registered workflow, as every engine on the database sees it."""

    workflow: str
    spec: str  # the cron expression, or "every 900s"
    timezone: str
    next_at: datetime | None = None  # UTC; None: no tick left
    last_at: datetime | None = None  # the last tick that started an instance
    paused: bool = False
    index: int = 0  # its place among the workflow's schedules
    overlap: str = "skip"
    catchup: str = "none"
