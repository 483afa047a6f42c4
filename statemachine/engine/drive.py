"""Claiming and running instances in this process: one instance (``drive``), every due one
(``drain``), and what ends a run (releasing its lease, dead-lettering it).

Claims go through the repository (a lease with an epoch); a claim that fails means another
worker owns the instance, and is not an error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from datetime import datetime, timedelta

from statemachine import errors
from statemachine.engine import executor, outage
from statemachine.engine.runner import InstanceRunner, child_notice
from statemachine.engine.services import Services
from statemachine.store import repository as repo
from statemachine.vocabulary import RUNNABLE, TERMINAL

_log = logging.getLogger("statemachine.worker")
COMMIT_BACKOFF = (1.0, 300.0)  # seconds: the first delay after a run failed to commit, the cap


async def drive(
    services: Services,
    instance_id: str,
    claimed: tuple[int, repo.InstanceRecord] | None = None,
    stop: threading.Event | None = None,
    keep: list[InstanceRunner] | None = None,
    birth: repo.NewInstance | None = None,
    counted: bool = False,
) -> bool:
    """Claim one instance and run it here until it waits or ends; True if it advanced.

    ``claimed`` is a claim made already (``Engine.execute`` creates its instance claimed; a
    worker claims due instances in batches); ``keep`` receives the runner, for a caller that
    reads its final state; ``birth`` is an instance not yet inserted, written with the run's
    first transition (``Engine.execute``); ``counted``: the caller counts this run in
    ``services.local.active_runners`` already (a worker counts what it claims): not counted twice.

    A handler's ``HandlerInterrupted`` leaves: the run's other handlers are cancelled and its
    lease given up at once (counted as a recovery), so the instance is recovered elsewhere.
    """
    if claimed is not None:
        epoch, rec = claimed
    else:
        now = services.clock.now()
        until = now + timedelta(seconds=services.settings.lease)
        # nothing else runs here now: a death while this runs is this instance's doing (its
        # children run inline, with this one held: theirs are not counted as alone)
        alone = not services.local.held and services.local.active_runners == 0
        claim = services.repo.claim(instance_id, services.worker_id, now, until, alone=alone)
        if claim is None:
            return False
        epoch, _ = claim
        found = services.repo.get(instance_id)
        if found is None:
            return False
        rec = found
    released = interrupted = ran = failed = False
    try:
        if rec.status not in RUNNABLE:
            return False
        if (
            rec.recoveries > services.settings.max_recoveries
        ):  # taken over, or interrupted, too often
            dead_letter(services, rec, epoch)
            return True
        limited = (
            services.registry.max_concurrent(rec.workflow_name) is not None
            or rec.concurrency_key is not None
        )
        slot = not limited or rec.status != "pending"
        if not slot and not services.repo.reserve_slot(instance_id, epoch, rec.workflow_name):
            return False  # stays pending (and due) until a slot frees
        if rec.status == "running" and rec.started_at is None:
            # its slot was reserved, then its worker died before the first commit: it starts
            # now, in the slot it holds (taking over the lease inherits the slot)
            rec.status = "pending"
        try:
            definition = services.registry.definition_for(rec, check_actions=True)
        except (errors.WorkflowNotFound, errors.DefinitionError) as exc:
            _log.warning("instance %s cannot run in this process: %s", instance_id, exc)
            return False
        runner = InstanceRunner(
            services, rec, epoch, definition, fresh=rec.status == "pending", stop=stop,
            birth=birth, run_child=functools.partial(drive, services),
        )  # fmt: skip
        if keep is not None:
            keep.append(runner)
        if not counted:
            services.local.count_runner(1)
        services.local.held[instance_id] = runner
        try:
            await runner.run()
            ran = not runner.lost
        except executor.HandlerInterrupted:
            interrupted = True
            for task in runner.inflight.values():  # its siblings' results would be lost anyway
                task.cancel()
            raise
        except BaseException:  # cancelled (a stop's grace ran out), or the database failed
            for task in runner.inflight.values():
                task.cancel()
            raise
        finally:
            if not counted:
                services.local.count_runner(-1)
            if services.local.held.get(instance_id) is runner:
                del services.local.held[instance_id]
        released = runner.state.status in TERMINAL  # the final commit dropped the lease
        return runner.advanced
    except Exception as exc:
        if stop is not None and outage.transient(exc):
            # a worker's run, and the database went away mid-run: what it holds is the truth,
            # and the instance is claimed again from there once it is back (a step whose
            # result was not stored reruns)
            services.outage.failed(f"the run of instance {instance_id}", exc)
            _log.warning(
                "instance %s: run cut short by the outage; it runs on once claimed again",
                instance_id,
            )
            return False
        if isinstance(exc, errors.StoreError):
            failed = True  # its progress (or its dead letter) could not be committed: back off
        raise
    finally:
        if not released:
            retry_at = commit_backoff(services, rec.recoveries) if failed else None
            await _release(
                services, instance_id, epoch, interrupted or failed, ran, retry_at, stop is not None
            )


def commit_backoff(services: Services, recoveries: int) -> datetime:
    """When an instance whose run failed to commit is due again: later each time, never at
    once (claimed again at once, it would run its handler in a hot loop). Each such failure
    counts as a recovery, so one that keeps failing is dead-lettered."""
    first, cap = COMMIT_BACKOFF
    delay = min(cap, first * 2.0 ** min(recoveries, 30))
    return services.clock.now() + timedelta(seconds=delay)


async def _release(
    services: Services,
    instance_id: str,
    epoch: int,
    recovery: bool,
    cleared: bool,
    wake_at: datetime | None = None,
    patient: bool = True,
) -> None:
    """Give the lease up so the instance can be claimed again at once; while the database is
    unreachable, again with backoff, for at most a lease (by then it has lapsed anyway). Not
    ``patient`` (``run_due``, ``execute``: a caller waits): one try, then the lease lapses."""
    backoff = outage.Backoff(services.outage, f"the release of instance {instance_id}")
    deadline = time.monotonic() + services.settings.lease
    while True:
        try:
            services.repo.release(
                instance_id, epoch, recovery=recovery, cleared=cleared, wake_at=wake_at
            )
        except Exception as exc:
            if not outage.transient(exc):
                if isinstance(exc, errors.StatemachineError):
                    return
                raise
            wait = backoff.failed(exc)
            if not patient or time.monotonic() + wait > deadline:
                return
            await asyncio.sleep(wait)
            continue
        backoff.ok()
        return


def dead_letter(services: Services, rec: repo.InstanceRecord, epoch: int) -> None:
    """An instance whose worker keeps dying fails instead of taking more workers down."""
    now = services.clock.now()
    error = {
        "type": "DeadLettered",
        "message": f"the instance's worker died (or a handler raised SystemExit or the like, "
        f"or its progress could not be committed) {rec.recoveries} times while running it alone",
    }
    services.repo.commit_transition(
        repo.Transition(
            rec.id,
            epoch,
            repo.Columns(
                status="failed", error=error, wake_at=None, completed_at=now, updated_at=now
            ),
            [],
            [repo.HistoryWrite("workflow.failed", rec.current_step, {"error": error}, now)],
            notify=child_notice(rec, "failed", None, error),
        )
    )
    services.publish(rec, "workflow.failed", rec.current_step, {"error": error})
    _log.error(
        "instance %s (%s) dead-lettered: %s", rec.id, rec.workflow_name, error["message"],
        extra={"instance_id": rec.id, "workflow": rec.workflow_name, "event": "dead_letter"},
    )  # fmt: skip


async def drain(services: Services, limit: int = 100) -> int:
    """Run every due instance, again while that makes more due (children, inline timers).
    One instance that fails to run (its writes refused, say) is logged and left due: it does
    not keep the others from running."""
    advanced = 0
    for _ in range(1000):
        ids = services.repo.due(services.clock.now(), limit)
        progressed = 0
        for iid in ids:
            try:
                if await drive(services, iid):
                    progressed += 1
            except executor.HandlerInterrupted:
                raise  # a handler's SystemExit/KeyboardInterrupt reaches run_due's caller
            except Exception:
                _log.exception("instance %s could not run; the others go on", iid)
        advanced += progressed
        if not progressed:
            break
    return advanced
