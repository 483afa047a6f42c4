"""What callers hand an engine: new instances (``start``, ``emit``'s triggers), events for
waiting ones, and metadata; each checked and made storable before anything is written."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

from statemachine import errors, records
from statemachine.definition import expressions, flow_control, models, schemas
from statemachine.definition.parts import MAX_PRIORITY
from statemachine.engine import queries
from statemachine.engine.services import Services
from statemachine.runtime import jsondata
from statemachine.store import repository as repo
from statemachine.store import tables
from statemachine.vocabulary import JSON, JSONObject

MAX_NESTING = 16  # subworkflow levels below a top-level instance (a self-recursive one stops)


def trigger_matches(trigger: models.Trigger, name: str, data: JSON) -> bool:
    """The event's top-level keys are names in the condition, besides ``event`` and ``input``."""
    if trigger.event != name:
        return False
    if not trigger.condition:
        return True
    names = dict(data) if isinstance(data, dict) else {}
    names.update(event=data, input=data)
    try:
        return expressions.compile_expression(trigger.condition).evaluate_condition(names)
    except errors.ExpressionError:
        return False  # a condition that cannot be evaluated on this data does not match


def check_event_name(name: object) -> None:
    jsondata.check_name(name, "an event's name", tables.ID_LENGTH)


def start(
    services: Services,
    workflow: str,
    input: JSON = None,
    instance_id: str | None = None,
    *,
    parent_id: str | None = None,
    definition: models.WorkflowDefinition | None = None,
    event: JSON = None,
    priority: int | None = None,
) -> str:
    """Record a new instance for a worker (or ``run_due``) to run; idempotent on ``instance_id``.
    ``event``: the data of the event whose trigger started it (``emit``), bound to ``event``
    in its expressions."""
    new = new_instance(
        services,
        workflow,
        input,
        instance_id,
        parent_id,
        definition,
        event=event,
        priority=priority,
    )
    if not insert(services, new):
        check_taken(services, new.record.id, new.record.workflow_name)
    return new.record.id


def check_taken(services: Services, iid: str, workflow: str) -> None:
    """An id that exists is fine (starting is idempotent) unless another workflow holds it."""
    existing = services.repo.get(iid)
    if existing is not None and existing.workflow_name != workflow:
        raise errors.InvalidTransition(
            f"instance id {iid!r} is already used by workflow {existing.workflow_name!r}",
            instance_id=iid,
        )


def new_instance(
    services: Services,
    workflow: str,
    input: JSON,
    instance_id: str | None,
    parent_id: str | None = None,
    definition: models.WorkflowDefinition | None = None,
    *,
    claim: bool = False,
    event: JSON = None,
    priority: int | None = None,
) -> repo.NewInstance:
    """A validated instance, not yet stored; with ``claim`` it is born leased to this engine."""
    if services.local.closed:
        raise errors.StatemachineError("this engine is closed")
    definition = definition or services.registry.definition(workflow)
    data = validate_input(definition, input)
    rank = definition.priority if priority is None else check_priority(priority)
    key = flow_control.concurrency_key(definition, data)
    iid = instance_id or uuid.uuid4().hex
    if parent_id is not None:
        check_child(services, iid, parent_id)
    jsondata.check_name(iid, "instance_id", tables.ID_LENGTH)
    now = services.clock.now()
    # the trigger's event data lives in the state column (``State.trigger_event``), which
    # every transition rewrites from the state it restored: it stays bound after restarts
    state: dict[str, Any] = {} if event is None else {"event": event}
    owner = services.worker_id if claim else None
    until = now + timedelta(seconds=services.settings.lease) if claim else None
    values: dict[str, Any] = {
        "id": iid,
        "workflow_name": definition.name,
        "workflow_version": definition.version,
        "definition_hash": definition.hash,
        "status": "pending",
        "input": data,
        "metadata": {},
        "state": state,
        "parent_id": parent_id,
        "wake_at": now,
        "lease_epoch": 1 if claim else 0,
        "lease_owner": owner,
        "lease_expires_at": until,
        "recoveries": 0,
        "priority": rank,
        "concurrency_key": key,
        "created_at": now,
        "updated_at": now,
    }
    started = repo.HistoryWrite(
        "workflow.started", None, {"input": data, "version": definition.version}, now
    )
    record = repo.InstanceRecord(
        id=iid, workflow_name=definition.name, workflow_version=definition.version,
        definition_hash=definition.hash, status="pending", current_step=None, input=data, output=None,
        error=None, metadata={}, state=state, parent_id=parent_id, wake_at=now, lease_owner=owner,
        lease_expires_at=until, lease_epoch=values["lease_epoch"], recoveries=0, created_at=now,
        started_at=None, completed_at=None, priority=rank, concurrency_key=key,
    )  # fmt: skip
    return repo.NewInstance(values, [started], record)


def check_priority(priority: object) -> int:
    """``start(..., priority=)``: a whole number in the range a definition's may take."""
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -MAX_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise errors.InputValidationError(
            f"priority must be a whole number from {-MAX_PRIORITY} to "
            f"{MAX_PRIORITY}, got {priority!r}"
        )
    return priority


def check_child(services: Services, child_id: str, parent_id: str) -> None:
    """A subworkflow's child: its id (the parent's id and the step's path) must fit, and
    its depth stay within ``MAX_NESTING`` (a workflow that starts itself would not end)."""
    if len(child_id) > tables.ID_LENGTH:
        raise errors.InputValidationError(
            f"the child instance id {child_id[:60]!r}... would be {len(child_id)} characters, "
            f"more than {tables.ID_LENGTH}: it is the parent's id ({len(parent_id)} "
            "characters) and the subworkflow step's path; shorten either"
        )
    depth, above = 1, services.repo.get(parent_id)
    while above is not None and above.parent_id is not None:
        depth += 1
        if depth > MAX_NESTING:
            raise errors.StatemachineError(
                f"subworkflows nest too deep: a child of {parent_id!r} would be at nesting "
                f"depth {depth}, and the limit is {MAX_NESTING} (does a workflow start itself "
                "without an end?)"
            )
        above = services.repo.get(above.parent_id)


def insert(services: Services, new: repo.NewInstance) -> bool:
    if not services.repo.create_instance(new):
        return False
    services.announce(new.record)
    return True


def validate_input(definition: models.WorkflowDefinition, input: JSON, root: str = "input") -> Any:
    """``input`` fitted to the workflow's schema and made storable; ``root`` names the
    argument it came in (``data`` for an emitted event) in each ``Issue``'s location."""
    if definition.input_schema is not None:
        try:
            input = schemas.conform(input, definition.input_schema)
        except schemas.Mismatch as exc:
            raise errors.InputValidationError(
                f"input of workflow {definition.name!r} is invalid: {exc}",
                errors=exc.issues(root),
            ) from None
    return storable(input, f"input of workflow {definition.name!r}", root)


def storable(value: JSON, what: str, root: str) -> Any:
    """``value`` as stored JSON, or an ``InputValidationError`` whose one ``Issue`` is at ``root``."""
    try:
        return jsondata.to_storable(value, what=what)
    except errors.OutputNotStorable as exc:
        issue = errors.Issue(str(exc), location=root, code="not_json")
        raise errors.InputValidationError(str(exc), errors=[issue]) from None


def send_event(services: Services, instance_id: str, name: str, data: JSON = None) -> None:
    """Deliver to a waiting instance, or keep in its inbox until it waits for ``name``."""
    check_event_name(name)
    rec = queries.record(services, instance_id)
    if rec.status in records.TERMINAL:
        raise errors.InvalidTransition(
            f"instance {instance_id} is {rec.status}; it takes no more events",
            instance_id=instance_id,
            status=rec.status,
        )
    payload = storable(data, f"data of event {name!r}", "data")
    now = services.clock.now()
    services.repo.add_event(instance_id, name, payload, now, wake=True)


def emit(
    services: Services, name: str, data: JSON = None, idempotency_key: str | None = None
) -> list[str]:
    """Start every registered workflow with a trigger matching this event; all or none.

    Every matching workflow's input is checked first, so an event that one of them refuses
    starts nothing (InputValidationError) instead of leaving half of them started. With an
    ``idempotency_key``, the same (event, key) again starts nothing and returns the ids of the
    first emit, in any process, until ``prune`` forgets the key.
    """
    check_event_name(name)
    if idempotency_key is not None:
        jsondata.check_name(idempotency_key, "idempotency_key", tables.ID_LENGTH)
        done = services.repo.emitted(name, idempotency_key)
        if done is not None:
            return done
    matching = [
        d
        for d in services.registry.definitions()
        if any(trigger_matches(t, name, data) for t in d.triggers)
    ]
    for definition in matching:
        validate_input(definition, data, root="data")
    event = storable(data, f"data of event {name!r}", "data")
    ids = [
        start(
            services,
            definition.name,
            data,
            keyed_id(name, idempotency_key, definition.name),
            definition=definition,
            event=event,
        )
        for definition in matching
    ]
    if idempotency_key is None:
        return ids
    return services.repo.record_emit(name, idempotency_key, ids, services.clock.now())


def keyed_id(event: str, key: str | None, workflow: str) -> str | None:
    """The instance id a keyed emit gives ``workflow``: the same for the same key, so that two
    processes racing on one key start one instance (``start`` is idempotent on its id), and
    one that crashed before recording the key starts nothing new when it is emitted again."""
    if key is None:
        return None
    digest = hashlib.sha256(f"{event}\0{key}\0{workflow}".encode()).hexdigest()
    return f"emit-{digest[:32]}"


def update_metadata(services: Services, instance_id: str, patch: JSONObject) -> None:
    if not isinstance(patch, dict):
        raise errors.InputValidationError("metadata must be a dict")
    rec = queries.record(services, instance_id)
    merged = storable({**rec.metadata, **patch}, "metadata", "metadata")
    services.repo.set_metadata(instance_id, merged, services.clock.now())


def set_metadata_key(services: Services, instance_id: str, key: str, value: JSON) -> None:
    update_metadata(services, instance_id, {key: value})
