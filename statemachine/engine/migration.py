"""Migration of running instances onto another version of their workflow (API.md section 11):
loading them, checking each (``runtime.migration_checks``) and committing the moves.

``to`` is a definition, or the version string of one registered in this engine. A definition
not registered yet is registered by ``migrate`` (never by the plan: a dry run changes nothing),
with ``check_actions=False`` since the process that migrates need not run the steps; it then
becomes the version new instances start on, as after any ``register``.

Each move is one compare-and-set, fenced like a cancel: the instance's state is read, checked
again, moved and committed only if nothing happened to it in between (``expect_seq``), taking
the lease from any runner that holds it. A worker in the middle of a step loses its lease
(its late commit is refused, ``LeaseLost``, nothing half applied); the instance is then due
at once, and the step runs again on the new version, at least once as after a worker's crash.
An instance that moved meanwhile so it is now blocked is skipped and reported, untouched.

What was already decided stays: a timer, backoff or poll interval under way keeps its wake
time, a loop its iteration count, the instance its deadline; the new version's durations and
limits apply from the next time they are read. A paused instance moves and stays paused.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping

from statemachine import errors, records
from statemachine.definition import models, schemas
from statemachine.engine import queries
from statemachine.engine.services import Services
from statemachine.runtime import plan as plans
from statemachine.runtime.migration import (
    MigrationCheck,
    MigrationPlan,
    check_mapping,
    move_frontier,
    move_rows,
    rename,
)
from statemachine.runtime.migration_checks import blockers
from statemachine.runtime.state import State
from statemachine.store import repository as repo
from statemachine.vocabulary import ACTIVE, InstanceStatus

ATTEMPTS = 10  # a move re-reads and re-checks at most this often when the instance races it
PAGE = 500  # instances read at once when planning every instance of a workflow
MIGRATED = "workflow.migrated"


def plan(
    services: Services,
    workflow: str,
    to: models.WorkflowDefinition | str,
    mapping: Mapping[str, str] | None,
    instances: Iterable[str] | None,
) -> MigrationPlan:
    """Check every instance (``instances``, or every one of ``workflow`` not over) against
    ``to``; nothing is written."""
    target = _target(services, workflow, to)
    recs = _records(services, workflow, instances)
    olds = _versions(services, workflow)
    olds += [d for r in recs if (d := _definition(services, r)) is not None]
    moves = check_mapping(dict(mapping or {}), olds, target)
    report = [_check(services, r, target, moves) for r in recs]
    return MigrationPlan(workflow, target, moves, report)


def apply(services: Services, migration: MigrationPlan) -> builtins.list[str]:
    """Move each instance the plan found ok, checked again now; returns the ids moved and
    rewrites ``migration.report`` with what happened to each."""
    if not isinstance(migration, MigrationPlan):
        raise errors.InputValidationError("migrate takes the plan plan_migration returned")
    target = migration.to
    if target.hash not in services.registry.by_hash:
        services.registry.register(target, check_actions=False)
    report: builtins.list[MigrationCheck] = []
    for check in migration.report:
        report.append(_move(services, check.instance_id, target, migration) if check.ok else check)
    migration.report = report
    return [c.instance_id for c in report if c.ok]


def _versions(services: Services, workflow: str) -> builtins.list[models.WorkflowDefinition]:
    registry = services.registry
    return [registry.by_hash[h] for h in registry.order.get(workflow, [])]


def _target(
    services: Services, workflow: str, to: models.WorkflowDefinition | str
) -> models.WorkflowDefinition:
    known = _versions(services, workflow)
    if not known and not services.repo.stored_versions(workflow):
        raise errors.WorkflowNotFound(workflow, f"no workflow named {workflow!r} is stored")
    if isinstance(to, models.WorkflowDefinition):
        if to.name != workflow:
            raise errors.InputValidationError(
                f"cannot migrate {workflow!r} to a definition of {to.name!r}"
            )
        return to
    found = [d for d in known if d.version == str(to)]
    if not found:
        versions = ", ".join(d.version for d in known) or "none"
        raise errors.WorkflowNotFound(
            workflow,
            f"workflow {workflow!r} has no registered version {to!r} (registered: {versions})",
        )
    return found[-1]


def _records(
    services: Services, workflow: str, instances: Iterable[str] | None
) -> builtins.list[repo.InstanceRecord]:
    if instances is None:
        statuses = sorted(ACTIVE)
        out: builtins.list[repo.InstanceRecord] = []
        while page := services.repo.list_instances(workflow, statuses, PAGE, len(out)):
            out += page
        return sorted(out, key=lambda r: (r.created_at, r.id))
    if isinstance(instances, str):
        raise errors.InputValidationError("instances is a list of instance ids, not one id")
    recs = [queries.record(services, iid) for iid in dict.fromkeys(instances)]
    for rec in recs:
        if rec.workflow_name != workflow:
            raise errors.InputValidationError(
                f"instance {rec.id} runs {rec.workflow_name!r}, not {workflow!r}"
            )
    return recs


def _definition(services: Services, rec: repo.InstanceRecord) -> models.WorkflowDefinition | None:
    try:
        return services.registry.definition_for(rec)
    except errors.StatemachineError:
        return None


def _check(
    services: Services,
    rec: repo.InstanceRecord,
    target: models.WorkflowDefinition,
    mapping: Mapping[str, str],
) -> MigrationCheck:
    found = _reasons(services, rec, target, mapping)
    return MigrationCheck(
        rec.id, not found, tuple(found), rec.status, rec.workflow_version, rec.definition_hash
    )


def _reasons(
    services: Services,
    rec: repo.InstanceRecord,
    target: models.WorkflowDefinition,
    mapping: Mapping[str, str],
) -> builtins.list[str]:
    if rec.status not in ACTIVE:
        return [f"it is {rec.status}: only instances not over migrate"]
    if rec.definition_hash == target.hash:
        return [f"it already runs version {target.version} ({target.hash})"]
    try:
        old = services.registry.definition_for(rec)
    except errors.StatemachineError as exc:
        return [f"its version cannot be read: {exc}"]
    if rec.status == InstanceStatus.PENDING and rec.started_at is None:
        return _input_fits(rec, target)
    rows = services.repo.steps(rec.id)
    old_plan, new_plan = plans.plan_for(old), plans.plan_for(target)
    state = _state(rec, rec.state, rows, old_plan)
    moved_rows, _, _ = move_rows(rows, mapping)
    moved = _state(rec, move_frontier(rec.state, mapping), moved_rows, new_plan)
    return blockers(old_plan, new_plan, state, moved, mapping)


def _input_fits(rec: repo.InstanceRecord, target: models.WorkflowDefinition) -> builtins.list[str]:
    """An instance not started yet starts on the new version: its input must fit it."""
    if target.input_schema is None:
        return []
    try:
        schemas.conform(rec.input, target.input_schema)
    except schemas.Mismatch as exc:
        return [f"its input does not match version {target.version}'s input schema: {exc}"]
    return []


def _state(
    rec: repo.InstanceRecord,
    frontier: Mapping[str, object],
    rows: builtins.list[records.StepResult],
    plan: plans.Plan,
) -> State:
    """As ``runner.load_state`` reads it (a map item's plain-path copies left out)."""
    return State.restore(
        status=rec.status, input=rec.input, metadata=rec.metadata, frontier=dict(frontier),
        steps=[r for r in rows if r.step_name not in plan.in_maps], output=rec.output,
        error=rec.error, started_at=rec.started_at, completed_at=rec.completed_at,
    )  # fmt: skip


def _move(
    services: Services, instance_id: str, target: models.WorkflowDefinition, mig: MigrationPlan
) -> MigrationCheck:
    """One instance checked again and moved, fenced; a blocked or finished one is reported."""
    for _ in range(ATTEMPTS):
        rec = services.repo.get(instance_id)
        if rec is None:
            return MigrationCheck(instance_id, False, ("it no longer exists",))
        found = _reasons(services, rec, target, mig.mapping)
        if found:
            changed = tuple(f"changed since the plan: {r}" for r in found)
            return MigrationCheck(
                rec.id, False, changed, rec.status, rec.workflow_version, rec.definition_hash
            )
        if _commit(services, rec, target, mig.mapping):
            return MigrationCheck(
                rec.id, True, (), rec.status, rec.workflow_version, rec.definition_hash
            )
    return MigrationCheck(instance_id, False, ("it kept changing; plan and migrate again",))


def _commit(
    services: Services,
    rec: repo.InstanceRecord,
    target: models.WorkflowDefinition,
    mapping: Mapping[str, str],
) -> bool:
    now = services.clock.now()
    rows = services.repo.steps(rec.id)
    _, moved, left = move_rows(rows, mapping)
    data = {
        "from_version": rec.workflow_version, "to_version": target.version,
        "from_hash": rec.definition_hash, "to_hash": target.hash, "mapping": dict(mapping),
    }  # fmt: skip
    columns = repo.Columns(
        state=move_frontier(rec.state, mapping),
        workflow_version=target.version,
        definition_hash=target.hash,
        updated_at=now,
    )
    if rec.current_step is not None:
        columns.current_step = rename(rec.current_step, mapping)
    if rec.lease_owner is not None and rec.status != InstanceStatus.PAUSED:
        columns.wake_at = now  # its runner loses the lease: another takes it over at once
    history = [repo.HistoryWrite(MIGRATED, None, data, now)]
    done = services.repo.commit_transition(
        repo.Transition(
            rec.id, None, columns, [_write(r) for r in moved], history,
            expect_status=(rec.status,), expect_seq=rec.history_seq, fence=True, drop_steps=left,
        )
    )  # fmt: skip
    if not done:
        return False
    services.local.interrupt(rec.id)
    services.publish(rec, MIGRATED, None, data)
    return True


def _write(row: records.StepResult) -> repo.StepWrite:
    return repo.StepWrite(
        row.step_name, row.status, row.input, row.output, row.error, row.attempts,
        row.iteration, row.started_at, row.completed_at, row.next_attempt_at,
    )  # fmt: skip
