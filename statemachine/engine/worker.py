"""Claiming and running due instances: one instance (``drive``), every due one (``drain``), and
the worker loop; plus the event-loop thread that all of them run on.

Claims go through the repository (a lease with an epoch); a claim that fails means another
worker owns the instance, and is not an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from statemachine import errors, outage
from statemachine.runner import InstanceRunner, child_notice
from statemachine.runtime import executor
from statemachine.runtime.state import TERMINAL
from statemachine.store import repository as repo

if TYPE_CHECKING:
    from statemachine.engine import Engine

T = TypeVar("T")
_log = logging.getLogger("statemachine.worker")
CHECKPOINT_EVERY = 300.0  # seconds between WAL checkpoints of a long-running worker
TICK = 0.2  # seconds between the loop's liveness ticks (see leases.LeaseKeeper)
WATCH = 0.5  # seconds between a caller's looks at whether the loop it waits on still lives
# seconds between a worker's looks at whether the leases it holds were fenced elsewhere (a
# cancel from another process): its poll interval, but no more often than this (one read of
# every held lease each time; a 10 ms poll would spend a drain's time on it)
WATCH_LEASES = 0.25
GC_THRESHOLD = (20_000, 20, 20)  # young-generation threshold while a process is a worker
GRACE = 30.0  # seconds a stopping worker lets running steps finish (``wind_down``)
COMMIT_BACKOFF = (1.0, 300.0)  # seconds: the first delay after a run failed to commit, the cap


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """For a process whose job is, for now, to be a worker (``Engine.run_worker``, the CLI):
    instances in flight keep many objects alive, and the default young-generation threshold
    (700 allocations) re-scans them several times per step (measured: 7-15% of a busy worker's
    steps/s; tests/benchmarks/bench_steps.py). The old threshold is back on return."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class LoopThread:
    """One asyncio loop in a daemon thread: handlers run there, sync callers wait on futures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="statemachine-loop", daemon=True
        )
        self.thread.start()
        self.beat = time.monotonic()  # the loop's last tick: a stalled loop stops ticking
        self.loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        self.beat = time.monotonic()
        self.loop.call_later(TICK, self._tick)

    @property
    def alive(self) -> bool:
        """False once the thread has ended: the loop runs nothing more (a stalled one will)."""
        return self.thread.is_alive()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            # a handler running inline on this loop called back into the engine (say, execute):
            # waiting on this loop from inside it would deadlock, so that call gets a loop of its own
            with concurrent.futures.ThreadPoolExecutor(1) as side:
                return side.submit(asyncio.run, coro).result(timeout)
        if not self.alive:
            coro.close()  # never scheduled: close it so Python does not warn
            raise _dead_loop()
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not fut.done():  # a loop that dies settles nothing: look at it now and then
            left = WATCH if deadline is None else min(WATCH, deadline - time.monotonic())
            concurrent.futures.wait([fut], timeout=max(left, 0.0))
            if fut.done():
                break
            if not self.alive:
                fut.cancel()
                raise _dead_loop()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"the engine's call did not finish within {timeout}s")
        return fut.result()

    def stop(self) -> None:
        if self.alive:  # a loop that died already must not stop its own winding down below
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if self.alive:
                return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._close()
            return
        # closed from a coroutine (a FastAPI lifespan, an async main): this thread cannot run
        # another loop while its own runs, so our loop is wound down on a thread of its own
        side = threading.Thread(target=self._close, name="statemachine-loop-close")
        side.start()
        side.join()

    def _close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


def _dead_loop() -> errors.StatemachineError:
    return errors.StatemachineError(
        "the engine's event loop thread has stopped, so it can run nothing more; "
        "close this engine and open a new one (its instances are recovered once their "
        "leases expire)"
    )


async def drive(
    engine: Engine,
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
    ``engine.active_runners`` already (a worker counts what it claims): not counted twice.

    A handler's ``HandlerInterrupted`` leaves: the run's other handlers are cancelled and its
    lease given up at once (counted as a recovery), so the instance is recovered elsewhere.
    """
    if claimed is not None:
        epoch, rec = claimed
    else:
        now = engine.clock.now()
        until = now + timedelta(seconds=engine.settings.lease)
        # nothing else runs here now: a death while this runs is this instance's doing (its
        # children run inline, with this one held: theirs are not counted as alone)
        alone = not engine.held and engine.active_runners == 0
        claim = engine.repo.claim(instance_id, engine.worker_id, now, until, alone=alone)
        if claim is None:
            return False
        epoch, _ = claim
        found = engine.repo.get(instance_id)
        if found is None:
            return False
        rec = found
    released = interrupted = ran = failed = False
    try:
        if rec.status not in repo.RUNNABLE:
            return False
        if rec.recoveries > engine.settings.max_recoveries:  # taken over, or interrupted, too often
            dead_letter(engine, rec, epoch)
            return True
        limited = engine.registry.max_concurrent(rec.workflow_name) is not None
        slot = not limited or rec.status != "pending"
        if not slot and not engine.repo.reserve_slot(instance_id, epoch, rec.workflow_name):
            return False  # stays pending (and due) until a slot frees
        try:
            definition = engine._definition_for(rec, check_actions=True)
        except (errors.WorkflowNotFound, errors.DefinitionError) as exc:
            _log.warning("instance %s cannot run in this process: %s", instance_id, exc)
            return False
        runner = InstanceRunner(
            engine, rec, epoch, definition, fresh=rec.status == "pending", stop=stop, birth=birth
        )
        if keep is not None:
            keep.append(runner)
        if not counted:
            engine.active_runners += 1
        engine.held[instance_id] = runner
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
                engine.active_runners -= 1
            if engine.held.get(instance_id) is runner:
                del engine.held[instance_id]
        released = runner.state.status in TERMINAL  # the final commit dropped the lease
        return runner.advanced
    except Exception as exc:
        if stop is not None and outage.transient(exc):
            # a worker's run, and the database went away mid-run: what it holds is the truth,
            # and the instance is claimed again from there once it is back (a step whose
            # result was not stored reruns)
            engine.outage.failed(f"the run of instance {instance_id}", exc)
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
            retry_at = commit_backoff(engine, rec.recoveries) if failed else None
            await _release(
                engine, instance_id, epoch, interrupted or failed, ran, retry_at, stop is not None
            )


def commit_backoff(engine: Engine, recoveries: int) -> datetime:
    """When an instance whose run failed to commit is due again: later each time, never at
    once (claimed again at once, it would run its handler in a hot loop). Each such failure
    counts as a recovery, so one that keeps failing is dead-lettered."""
    first, cap = COMMIT_BACKOFF
    delay = min(cap, first * 2.0 ** min(recoveries, 30))
    return engine.clock.now() + timedelta(seconds=delay)


async def _release(
    engine: Engine,
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
    backoff = outage.Backoff(engine.outage, f"the release of instance {instance_id}")
    deadline = time.monotonic() + engine.settings.lease
    while True:
        try:
            engine.repo.release(
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


async def _claim(engine: Engine, limit: int, idle: bool = False) -> repo.Claims:
    """Due instances, claimed in one transaction on the committer thread (it owns the write
    lock); an ``idle`` worker may claim a suspect, alone (``Repository.claim_due``)."""
    now = engine.clock.now()
    until = now + timedelta(seconds=engine.settings.lease)
    job = functools.partial(engine.repo.claim_due, engine.worker_id, now, until, limit, idle=idle)
    return await asyncio.wrap_future(engine.repo.committer.call(job))


def _finished(
    engine: Engine, instance_id: str, stop: threading.Event
) -> Callable[[asyncio.Task[bool]], None]:
    """A claimed run ended: it counts no more. A handler's SystemExit or KeyboardInterrupt
    stops the worker gracefully, as SIGTERM does (running steps finish, nothing new starts);
    any other error is logged, and the worker goes on with its other instances."""

    def done(task: asyncio.Task[bool]) -> None:
        engine.active_runners -= 1
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


def dead_letter(engine: Engine, rec: repo.InstanceRecord, epoch: int) -> None:
    """An instance whose worker keeps dying fails instead of taking more workers down."""
    now = engine.clock.now()
    error = {
        "type": "DeadLettered",
        "message": f"the instance's worker died (or a handler raised SystemExit or the like, "
        f"or its progress could not be committed) {rec.recoveries} times while running it alone",
    }
    engine.repo.commit_transition(
        repo.Transition(
            rec.id,
            epoch,
            {
                "status": "failed",
                "error": error,
                "wake_at": None,
                "completed_at": now,
                "updated_at": now,
            },
            [],
            [repo.HistoryWrite("workflow.failed", rec.current_step, {"error": error}, now)],
            notify=child_notice(rec, "failed", None, error),
        )
    )
    engine.publish(rec, "workflow.failed", rec.current_step, {"error": error})
    _log.error(
        "instance %s (%s) dead-lettered: %s", rec.id, rec.workflow_name, error["message"],
        extra={"instance_id": rec.id, "workflow": rec.workflow_name, "event": "dead_letter"},
    )  # fmt: skip


async def drain(engine: Engine, limit: int = 100) -> int:
    """Run every due instance, again while that makes more due (children, inline timers).
    One instance that fails to run (its writes refused, say) is logged and left due: it does
    not keep the others from running."""
    advanced = 0
    for _ in range(1000):
        ids = engine.repo.due(engine.clock.now(), limit)
        progressed = 0
        for iid in ids:
            try:
                if await drive(engine, iid):
                    progressed += 1
            except executor.HandlerInterrupted:
                raise  # a handler's SystemExit/KeyboardInterrupt reaches run_due's caller
            except Exception:
                _log.exception("instance %s could not run; the others go on", iid)
        advanced += progressed
        if not progressed:
            break
    return advanced


def _isolating(engine: Engine) -> bool:
    """A suspect runs here alone (``Repository.claim_due``): nothing else may start meanwhile,
    so that, should the process die, the death is known to be its doing."""
    return any(runner.rec.lease_alone for runner in engine.held.values())


def abort_taken(engine: Engine) -> None:
    """Stop at once the runners whose instance another process fenced (a cancel): one read per
    poll interval, so a cancel reaches a running handler within it, not at the next heartbeat."""
    held = {iid: r.epoch for iid, r in engine.held.items() if r.birth is None}
    if not held:
        return
    for iid in engine.repo.taken(held):
        runner = engine.held.get(iid)
        if runner is not None and runner.epoch == held[iid]:
            runner.abort()


async def work(
    engine: Engine,
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
    claims = outage.Backoff(engine.outage, "claiming due instances")
    checks = outage.Backoff(engine.outage, "checking the leases this worker holds", writes=False)
    claim_at = 0.0  # monotonic time of the next claim (later while the database is away)

    def start(epoch: int, rec: repo.InstanceRecord) -> asyncio.Task[bool]:
        task = asyncio.ensure_future(drive(engine, rec.id, (epoch, rec), stop=stop, counted=True))
        running[rec.id] = task
        # claimed work waiting here counts: runners then share commits, not take turns
        engine.active_runners += 1
        task.add_done_callback(_finished(engine, rec.id, stop))
        return task

    while not stop.is_set():
        if time.monotonic() >= checkpoint_at:  # long runs keep the SQLite WAL small
            checkpoint_at = time.monotonic() + CHECKPOINT_EVERY
            with contextlib.suppress(Exception):  # a failed checkpoint is retried next time
                engine.repo.checkpoint()
        if running and time.monotonic() >= watch_at:
            watch_at = time.monotonic() + watch
            try:
                abort_taken(engine)
                checks.ok()
            except Exception as exc:  # the heartbeat still finds a lost lease
                if not outage.transient(exc):
                    _log.warning("could not check the leases this worker holds", exc_info=True)
                else:
                    watch_at = time.monotonic() + max(watch, checks.failed(exc))
        for iid, task in list(running.items()):
            if task.done():
                del running[iid]
        isolated = alone in running or _isolating(engine)
        free = 0 if isolated or (suspect and running) else concurrency - len(running)
        if free > 0 and time.monotonic() >= claim_at:
            try:
                claimed = await _claim(engine, free, idle=not running and not engine.held)
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
        await wind_down(engine, running, grace, hurry)


async def wind_down(
    engine: Engine,
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
    await asyncio.wait(pending, timeout=engine.settings.lease + 5)
