"""The worker loop: claim due instances in batches, up to a concurrency, run them, and wind
down gracefully when told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from statemachine.engine import executor, outage, schedules
from statemachine.engine.drive import drive
from statemachine.engine.services import Services
from statemachine.store import repository as repo

_log = logging.getLogger("statemachine.worker")
CHECKPOINT_EVERY = 300.0  # seconds between WAL checkpoints of a long-running worker
# seconds between a worker's looks at whether the leases it holds were fenced elsewhere (a
# cancel from another process): its poll interval, but no more often than this (one read of
# every held lease each time; a 10 ms poll would spend a drain's time on it)
WATCH_LEASES = 0.25
FIRE_EVERY = 1.0  # seconds between two looks at the due schedules
GRACE = 30.0  # seconds a stopping worker lets running steps finish (``wind_down``)


async def _claim(services: Services, limit: int, idle: bool = False) -> repo.Claims:
    """Due instances, claimed in one transaction on the committer thread (it owns the write
    lock); an ``idle`` worker may claim a suspect, alone (``Repository.claim_due``)."""
    now = services.clock.now()
    until = now + timedelta(seconds=services.settings.lease)
    job = functools.partial(
        services.repo.claim_due, services.worker_id, now, until, limit, idle=idle
    )
    return await asyncio.wrap_future(services.repo.call(job))


def _finished(
    services: Services, instance_id: str, stop: threading.Event
) -> Callable[[asyncio.Task[bool]], None]:
    """A claimed run ended: it counts no more. A handler's SystemExit or KeyboardInterrupt
    stops the worker gracefully, as SIGTERM does (running steps finish, nothing new starts);
    any other error is logged, and the worker goes on with its other instances."""

    def done(task: asyncio.Task[bool]) -> None:
        services.local.count_runner(-1)
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, executor.HandlerInterrupted):
            graceful = isinstance(exc.original, KeyboardInterrupt | SystemExit)
            _log.warning(
                "instance %s: %s; it is left for recovery%s", instance_id, exc,
                "; the worker stops" if graceful else "",
            )  # fmt: skip
            if graceful:
                stop.set()
        elif exc is not None:
            _log.error("instance %s: its run failed", instance_id, exc_info=exc)

    return done


def _isolating(services: Services) -> bool:
    """A suspect runs here alone (``Repository.claim_due``): nothing else may start meanwhile,
    so that, should the process die, the death is known to be its doing."""
    return any(runner.rec.lease_alone for runner in services.local.held.values())


def abort_taken(services: Services) -> None:
    """Stop at once the runners whose instance another process fenced (a cancel): one read per
    poll interval, so a cancel reaches a running handler within it, not at the next heartbeat."""
    held = {iid: r.epoch for iid, r in services.local.held.items() if r.birth is None}
    if not held:
        return
    for iid in services.repo.taken(held):
        runner = services.local.held.get(iid)
        if runner is not None and runner.epoch == held[iid]:
            runner.abort()


async def _fire_schedules(services: Services) -> None:
    """Start the instances of due schedule ticks (``schedules``); off the loop, since a claim
    is a write transaction. A failure is logged: the next look fires what is still due."""
    try:
        await asyncio.to_thread(schedules.fire_due, services)
    except Exception as exc:
        if not outage.transient(exc):
            _log.warning("could not fire the due schedules", exc_info=True)


async def work(
    services: Services,
    concurrency: int,
    poll: float,
    stop: threading.Event,
    grace: float = GRACE,
    hurry: threading.Event | None = None,
) -> None:
    """Claim due instances, up to ``concurrency`` at once, until ``stop`` is set; then wind down
    (``wind_down``: running steps get ``grace`` seconds, or until ``hurry`` is set). A suspect
    (its handler ran when a worker died) runs alone (``Repository.claim_due``).

    The database may go away for a while (a restart, a failover, a full disk): claims and lease
    checks then back off (``outage.WAIT``: 0.1 s doubling to 5 s) and the loop goes on, logging
    the outage once; the runners retry their commits the same way."""
    running: dict[str, asyncio.Task[bool]] = {}
    suspect = False  # a suspect is due: claim nothing more until idle, then run it alone
    alone: str | None = None  # the suspect this worker runs alone: nothing else starts meanwhile
    checkpoint_at = time.monotonic() + CHECKPOINT_EVERY
    watch = max(poll, WATCH_LEASES)
    watch_at = time.monotonic() + watch
    claims = outage.Backoff(services.outage, "claiming due instances")
    checks = outage.Backoff(services.outage, "checking the leases this worker holds", writes=False)
    claim_at = 0.0  # monotonic time of the next claim (later while the database is away)
    fire_at = 0.0  # monotonic time schedules are next looked at (every poll, at most 1/s)

    def start(epoch: int, rec: repo.InstanceRecord) -> asyncio.Task[bool]:
        task = asyncio.ensure_future(drive(services, rec.id, (epoch, rec), stop=stop, counted=True))
        running[rec.id] = task
        # claimed work waiting here counts: runners then share commits, not take turns
        services.local.count_runner(1)
        task.add_done_callback(_finished(services, rec.id, stop))
        return task

    while not stop.is_set():
        if time.monotonic() >= checkpoint_at:  # long runs keep the SQLite WAL small
            checkpoint_at = time.monotonic() + CHECKPOINT_EVERY
            with contextlib.suppress(Exception):  # a failed checkpoint is retried next time
                services.repo.checkpoint()
        if running and time.monotonic() >= watch_at:
            watch_at = time.monotonic() + watch
            try:
                abort_taken(services)
                checks.ok()
            except Exception as exc:  # the heartbeat still finds a lost lease
                if not outage.transient(exc):
                    _log.warning("could not check the leases this worker holds", exc_info=True)
                else:
                    watch_at = time.monotonic() + max(watch, checks.failed(exc))
        for iid, task in list(running.items()):
            if task.done():
                del running[iid]
        if time.monotonic() >= fire_at:
            fire_at = time.monotonic() + max(poll, FIRE_EVERY)
            await _fire_schedules(services)
        isolated = alone in running or _isolating(services)
        free = 0 if isolated or (suspect and running) else concurrency - len(running)
        if free > 0 and time.monotonic() >= claim_at:
            try:
                claimed = await _claim(services, free, idle=not running and not services.local.held)
                claims.ok()
            except Exception as exc:
                if not outage.transient(exc):
                    raise
                claimed = None
                claim_at = time.monotonic() + claims.failed(exc)
            if claimed is not None:
                suspect = claimed.deferred > 0
                for epoch, _, rec in claimed:
                    start(epoch, rec)
                    if rec.lease_alone:
                        alone = rec.id
        await asyncio.sleep(poll if not running else min(poll, 0.05))
    if running:
        await wind_down(services, running, grace, hurry)


async def wind_down(
    services: Services,
    running: dict[str, asyncio.Task[bool]],
    grace: float,
    hurry: threading.Event | None,
) -> None:
    """A stopping worker claims nothing more; its runners finish the steps in flight (and keep
    their leases meanwhile) but start no new ones. Whatever still runs after ``grace`` seconds,
    or once ``hurry`` is set (a second SIGTERM/SIGINT), is cancelled and its lease released,
    so another worker takes it over at once instead of after the lease; its step runs again
    there (the abandoned call's result is discarded)."""
    deadline = time.monotonic() + grace
    pending = {t for t in running.values() if not t.done()}
    while pending and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        left = min(outage.SLICE, max(0.0, deadline - time.monotonic()))
        _, pending = await asyncio.wait(pending, timeout=left)
    if not pending:
        return
    cut = sorted(iid for iid, t in running.items() if t in pending)
    _log.warning(
        "stopping: %d instance(s) still running after %s; their leases are released for "
        "another worker to take over: %s",
        len(cut),
        "a second signal" if hurry is not None and hurry.is_set() else f"the {grace:g}s grace",
        ", ".join(cut[:10]),
    )
    for task in pending:
        task.cancel()
    await asyncio.wait(pending, timeout=services.settings.lease + 5)


@contextlib.contextmanager
def stop_signals() -> Iterator[tuple[threading.Event, threading.Event]]:
    """While the block runs (on the main thread), SIGTERM/SIGINT set the first event (stop
    claiming, finish what runs) and a second one the other (cut the grace short); the
    process's own handlers are back afterwards."""
    stop, hurry = threading.Event(), threading.Event()

    def signalled(*_: object) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, signalled)
    try:
        yield stop, hurry
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
