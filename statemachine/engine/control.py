"""Control calls on one instance: pause, resume, cancel, retry, replay.

Each is a compare-and-set on the instance's row, made again (a bounded number of times) when a
runner committed in between; one that stops a runner (cancel, retry) fences its lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from typing import Any

from statemachine import errors, records
from statemachine.engine import inputs, queries, runner
from statemachine.engine.services import Services
from statemachine.runtime import interpreter as interp
from statemachine.runtime import plan as plans
from statemachine.store import repository as repo
from statemachine.vocabulary import ACTIVE, InstanceStatus

CONTROL_ATTEMPTS = 10  # a control call re-reads and re-decides at most this often when it races


def _ordered(allowed: Collection[InstanceStatus]) -> tuple[InstanceStatus, ...]:
    """The statuses in their declared order: the error message lists them so, every time."""
    return tuple(s for s in InstanceStatus if s in allowed)


def control(
    services: Services,
    instance_id: str,
    allowed: Collection[InstanceStatus],
    verb: str,
    values: dict[str, Any],
    event: str,
    fence: bool = False,
    decide: Callable[[repo.InstanceRecord], interp.Decision | None] | None = None,
    notify_parent: bool = False,
) -> None:
    """Commit a control call: read, check, decide, and compare-and-set, again (a bounded
    number of times) when the instance changed between the read and the commit. A fenced
    call that lost such a race takes the lease first, so no runner commits in between
    (see ``_fence``); the first try fences in its own commit, so a caller never sees the
    runner stopped before the control call is recorded."""
    for attempt in range(CONTROL_ATTEMPTS):
        if fence and attempt:
            _fence(services, instance_id, allowed, verb)
        rec = _allowed(services, instance_id, allowed, verb)
        decision = decide(rec) if decide is not None else None
        if _commit(services, rec, values, event, fence, decision, notify_parent):
            return
    raise errors.StatemachineError(
        f"could not {verb} instance {instance_id}: it kept changing; try again"
    )


def _allowed(
    services: Services, instance_id: str, allowed: Collection[InstanceStatus], verb: str
) -> repo.InstanceRecord:
    rec = queries.record(services, instance_id)
    if rec.status not in allowed:
        raise errors.InvalidTransition(
            f"cannot {verb} instance {instance_id}: it is {rec.status} (allowed when {', '.join(_ordered(allowed))})",
            instance_id=instance_id,
            status=rec.status,
        )
    return rec


def _fence(
    services: Services, instance_id: str, allowed: Collection[InstanceStatus], verb: str
) -> None:
    """Take the instance from whichever runner holds it: its next commit fails (LeaseLost),
    so the state read next is the one the control call decides on. A runner here stops now."""
    t = repo.Transition(instance_id, None, fence=True, expect_status=_ordered(allowed))
    if not services.repo.commit_transition(t):
        _allowed(services, instance_id, allowed, verb)  # raises, unless it changed back meanwhile


def _commit(
    services: Services,
    rec: repo.InstanceRecord,
    values: dict[str, Any],
    event: str,
    fence: bool,
    decision: interp.Decision | None,
    notify_parent: bool,
) -> bool:
    """One compare-and-set: False if the instance changed since ``rec`` was read."""
    now = services.clock.now()
    vals = {**values, "updated_at": now}
    steps: list[repo.StepWrite] = []
    history = [repo.HistoryWrite(event, None, {}, now)]
    if decision is not None:
        vals["state"] = decision.state.frontier_json()
        steps = runner.step_writes(decision.state, decision.changed)
        history = [repo.HistoryWrite(h.type, h.step, h.data, now) for h in decision.history]
    notify = []
    if notify_parent:
        notify = runner.child_notice(rec, vals["status"], None, vals.get("error"))
    done = services.repo.commit_transition(
        repo.Transition(
            rec.id, None, repo.Columns(**vals), steps, history, [], notify,
            expect_status=(rec.status,),
            expect_seq=rec.history_seq if decision is not None else None, fence=fence,
        )
    )  # fmt: skip
    if not done:
        return False
    if fence:
        services.local.interrupt(rec.id)
    for h in history:
        services.publish(rec, h.type, h.step, h.data)
    if vals.get("status") in records.TERMINAL:
        queries.finished(services, rec.id, services.registry.definition_for(rec))
    return True


def pause(services: Services, instance_id: str) -> None:
    control(
        services,
        instance_id,
        {InstanceStatus.PENDING, InstanceStatus.RUNNING, InstanceStatus.WAITING},
        "pause",
        {"status": "paused"},
        "workflow.paused",
    )


def resume(services: Services, instance_id: str) -> None:
    rec = queries.record(services, instance_id)
    status = "pending" if rec.started_at is None else "running"
    control(
        services,
        instance_id,
        {InstanceStatus.PAUSED},
        "resume",
        {"status": status, "wake_at": services.clock.now()},
        "workflow.resumed",
    )


def cancel(services: Services, instance_id: str) -> None:
    now = services.clock.now()
    control(
        services,
        instance_id,
        ACTIVE,
        "cancel",
        {
            "status": "cancelled",
            "wake_at": None,
            "completed_at": now,
            "error": {"type": "Cancelled", "message": "cancelled"},
        },
        "workflow.cancelled",
        fence=True,
        decide=lambda rec: decide_on(services, rec, interp.Cancel()),
        notify_parent=True,
    )
    for child in services.repo.list_instances(
        None, _ordered(ACTIVE), 1000, 0, parent_id=instance_id
    ):
        with contextlib.suppress(errors.InvalidTransition):
            cancel(services, child.id)


def decide_on(services: Services, rec: repo.InstanceRecord, event: interp.Event) -> interp.Decision:
    definition = services.registry.definition_for(rec)
    plan = plans.plan_for(definition)
    state = runner.load_state(services.repo, rec, plan)
    return interp.decide(plan, state, event, services.clock.now(), rec.id)


def retry(services: Services, instance_id: str) -> None:
    rec = queries.record(services, instance_id)
    if rec.status != "failed":
        raise errors.InvalidTransition(
            f"cannot retry instance {instance_id}: it is {rec.status}, not failed",
            instance_id=instance_id,
            status=rec.status,
        )
    control(
        services,
        instance_id,
        {InstanceStatus.FAILED},
        "retry",
        {
            "status": "running",
            "wake_at": services.clock.now(),
            "error": None,
            "completed_at": None,
            "output": None,
            # a dead-lettered instance starts counting its workers' deaths afresh (DBOS's
            # resume does the same): else one more crash dead-letters it again at once
            "recoveries": 0,
            "crashes": 0,
        },
        "workflow.retried",
        fence=True,
        decide=lambda rec: decide_on(services, rec, interp.Retry()),
    )


def replay(services: Services, instance_id: str) -> str:
    rec = queries.record(services, instance_id)
    definition = services.registry.definition_for(rec)
    event = rec.state.get("event")  # started by a trigger: the same event again
    return inputs.start(services, rec.workflow_name, rec.input, definition=definition, event=event)
