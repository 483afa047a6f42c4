"""Reading instances back: one (``get``), many (``list_instances``), their history; and the
``on_complete`` callback, which is handed the instance as read back."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from statemachine import errors, records
from statemachine.definition import issues, models
from statemachine.engine.services import Services
from statemachine.runtime import jsondata
from statemachine.runtime import plan as plans
from statemachine.runtime.state import is_item_result
from statemachine.store import repository as repo
from statemachine.store import tables
from statemachine.vocabulary import JSON

_log = logging.getLogger("statemachine.engine")


def findable(instance_id: object) -> bool:
    """Whether some stored instance could have this id: one that none can is not looked up
    (a lone surrogate cannot even be sent to the database), it is simply not found."""
    return (
        isinstance(instance_id, str)
        and 0 < len(instance_id) <= tables.ID_LENGTH
        and jsondata.text_problem(instance_id) is None
    )


def record(services: Services, instance_id: str) -> repo.InstanceRecord:
    if not findable(instance_id):
        raise errors.InstanceNotFound(
            instance_id if isinstance(instance_id, str) else repr(instance_id)
        )
    rec = services.repo.get(instance_id)
    if rec is None:
        raise errors.InstanceNotFound(instance_id)
    return rec


def get(services: Services, instance_id: str) -> records.WorkflowInstance:
    return instance(services, record(services, instance_id))


def instance(services: Services, rec: repo.InstanceRecord) -> records.WorkflowInstance:
    rows = [s for s in services.repo.steps(rec.id) if not is_item_result(s.step_name)]
    steps = {s.step_name: s for s in _in_start_order(services, rec, rows)}
    return records.WorkflowInstance(
        id=rec.id,
        workflow_name=rec.workflow_name,
        workflow_version=rec.workflow_version,
        definition_hash=rec.definition_hash,
        status=rec.status,
        current_step=rec.current_step,
        input=rec.input,
        output=rec.output,
        error=rec.error,
        step_results=steps,
        metadata=rec.metadata,
        parent_id=rec.parent_id,
        created_at=rec.created_at,
        started_at=rec.started_at,
        completed_at=rec.completed_at,
        wake_at=rec.wake_at,
        priority=rec.priority,
        concurrency_key=rec.concurrency_key,
    )


def _in_start_order(
    services: Services, rec: repo.InstanceRecord, rows: list[records.StepResult]
) -> list[records.StepResult]:
    """Steps in the order they started, ties in the graph's order (``Plan.order_key``); a
    version this process cannot load (inline callables) breaks ties by path."""
    try:
        plan: plans.Plan | None = plans.plan_for(services.registry.definition_for(rec))
    except errors.WorkflowNotFound:
        plan = None

    def key(s: records.StepResult) -> plans.OrderKey:
        if plan is None:
            return plans.order_key(s.step_name, s.started_at, s.completed_at, 0)
        return plan.order_key(s.step_name, s.started_at, s.completed_at)

    return sorted(rows, key=key)


def _check_metadata_filter(metadata: object) -> None:
    """``list(metadata=)`` compares scalar values: nested ones would match differently on
    SQLite and Postgres (JSON containment), so they are refused rather than half-supported."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise errors.InputValidationError("metadata filter must be a dict with string keys")
    for key, value in metadata.items():
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise errors.InputValidationError(
                f"metadata filter {key!r}: compare a string, number, boolean or None, "
                f"not {type(value).__name__}"
            )


def list_instances(
    services: Services,
    workflow: str | None,
    status: str | None,
    limit: int,
    offset: int,
    metadata: Mapping[str, JSON] | None,
    parent_id: str | None,
) -> list[records.WorkflowInstance]:
    """``Engine.list``: its arguments checked, then read."""
    _check_metadata_filter(metadata)
    if workflow is not None and not isinstance(workflow, str):
        raise errors.InputValidationError(
            f"workflow must be a workflow's name (a string) or None, not {workflow!r}"
        )
    if status is not None and status not in records.STATUSES:
        hint = issues.did_you_mean(status, records.STATUSES) if isinstance(status, str) else ""
        raise errors.InputValidationError(f"unknown status {status!r}{hint}")
    if not (
        isinstance(limit, int) and 0 < limit <= 10_000 and isinstance(offset, int) and offset >= 0
    ):
        raise errors.InputValidationError("limit must be 1..10000 and offset >= 0")
    if workflow is not None and jsondata.text_problem(workflow) is not None:
        return []  # no workflow is named so (and the database could not be asked)
    return [
        instance(services, r)
        for r in services.repo.list_instances(
            workflow, status, limit, offset, parent_id, metadata=metadata
        )
    ]


def history(services: Services, instance_id: str) -> list[records.HistoryEntry]:
    record(services, instance_id)
    return services.repo.history(instance_id)


def finished(services: Services, instance_id: str, definition: models.WorkflowDefinition) -> None:
    if definition.on_complete is not None:
        try:
            definition.on_complete(get(services, instance_id))
        except Exception:  # a callback must not break the engine
            _log.exception("on_complete of %s failed", instance_id)
