"""Firing schedules: every due tick of every schedule this engine knows the version of starts
one instance, ``{workflow}@{tick in UTC}``, however many engines share the database.

``run_due`` and the worker loop call ``fire_due``. A tick is claimed (``next_at`` moved on by
compare-and-set) in the transaction that inserts its instance (``store.schedules``): an engine
that loses the race starts nothing, a crash loses no tick and starts none twice.

Missed ticks (no engine ran when they came due) follow ``catchup``: with ``none`` the due
ticks start an instance only when just one is due (nothing was missed: the latest tick came
after the previous one was handled); with more, the schedule was not watched and they are all
skipped. ``latest`` starts the latest of them, ``all`` every one (the latest 100 at most).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from statemachine import errors, records
from statemachine.definition import issues, models, schedule_spec
from statemachine.engine import control, inputs
from statemachine.engine.services import Services
from statemachine.store.records import NewInstance
from statemachine.store.schedules import ScheduleRecord, Tick

_log = logging.getLogger("statemachine.schedules")


def instance_id(workflow: str, tick: datetime) -> str:
    """The deterministic id of a tick's instance: ``nightly@2030-01-01T02:00:00Z``."""
    return f"{workflow}@{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def fire_due(services: Services) -> int:
    """Start the instances of every due tick; how many started here."""
    now = services.clock.now()
    started = 0
    for row in services.repo.due_schedules(now):
        definition = services.registry.by_hash.get(row.definition_hash)
        if definition is None or row.idx >= len(definition.schedules) or row.next_at is None:
            continue  # a version this engine does not have: an engine that has it fires it
        try:
            started += _fire(services, definition, row, now)
        except errors.StoreError:
            raise
        except Exception:
            _log.exception("schedule %s[%d] could not fire", row.workflow, row.idx)
    return started


def plan(
    schedule: models.Schedule, next_at: datetime, now: datetime
) -> tuple[list[datetime], datetime]:
    """The ticks to start (per ``catchup``) and the ``next_at`` after them."""
    ticks, after = schedule_spec.due_ticks(
        schedule.cron, schedule.every, schedule.timezone, next_at, now
    )
    if schedule.catchup == "all":
        return ticks, after
    if schedule.catchup == "none" and len(ticks) > 1:
        return [], after
    return ticks[-1:], after


def _fire(
    services: Services, definition: models.WorkflowDefinition, row: ScheduleRecord, now: datetime
) -> int:
    assert row.next_at is not None
    schedule = definition.schedules[row.idx]
    fire, after = plan(schedule, row.next_at, now)
    if not fire:  # every due tick was missed: move on past them
        services.repo.claim_tick(
            Tick(row.workflow, row.idx, row.next_at, after, None, None, False, now)
        )
        return 0
    olds = [row.next_at, *fire[1:]]
    news = [*fire[1:], after]
    started = 0
    for tick, old, new in zip(fire, olds, news, strict=True):
        birth = _birth(services, definition, schedule, tick)
        claim = Tick(row.workflow, row.idx, old, new, tick, birth, schedule.overlap == "skip", now)
        claimed = services.repo.claim_tick(claim)
        if claimed is None:
            return started  # another engine claimed it: it handles the rest
        if claimed.started and birth is not None:
            started += 1
            services.announce(birth.record)
        if claimed.previous_running and schedule.overlap == "cancel_previous":
            with contextlib.suppress(errors.StatemachineError):
                control.cancel(services, claimed.previous_running)
    return started


def _birth(
    services: Services,
    definition: models.WorkflowDefinition,
    schedule: models.Schedule,
    tick: datetime,
) -> NewInstance | None:
    """The tick's instance, not yet stored; None (the tick is skipped, and logged) when its
    input does not fit the workflow's input schema."""
    iid = instance_id(definition.name, tick)
    try:
        return inputs.new_instance(services, definition.name, schedule.input, iid, None, definition)
    except errors.StatemachineError as exc:
        _log.error("schedule of %s skips the tick %s: %s", definition.name, tick, exc)
        return None


# -- what engine.schedules() and the pause calls do -------------------------------------


def infos(services: Services, workflow: str | None = None) -> list[records.ScheduleInfo]:
    out = []
    for row in services.repo.schedules(workflow):
        spec = row.spec
        out.append(
            records.ScheduleInfo(
                workflow=row.workflow, spec=str(spec.get("cron") or f"every {spec.get('every')}"),
                timezone=row.timezone, next_at=row.next_at, last_at=row.last_at,
                paused=row.paused, index=row.idx, overlap=str(spec.get("overlap", "skip")),
                catchup=str(spec.get("catchup", "none")),
            )
        )  # fmt: skip
    return out


def set_paused(services: Services, workflow: str, paused: bool) -> None:
    """Pause or resume every schedule of ``workflow``. Resuming, ``catchup: none`` starts
    again from now (the ticks passed while paused are skipped); ``latest`` and ``all`` keep
    ``next_at``, so the ticks passed meanwhile follow ``catchup`` at the next firing."""
    rows = services.repo.schedules(workflow)
    if not rows:
        known = {r.workflow for r in services.repo.schedules()}
        raise errors.WorkflowNotFound(
            workflow,
            f"workflow {workflow!r} has no schedule{issues.did_you_mean(workflow, known)}",
        )
    now = services.clock.now()
    for row in rows:
        next_at = None
        if not paused and row.spec.get("catchup", "none") == "none":
            schedule = models.Schedule.model_validate(row.spec)
            next_at = schedule.next_after(now)
        services.repo.set_schedule(workflow, row.idx, paused=paused, next_at=next_at, now=now)
