"""Keeps the engine's leases while one of its event loops is stalled.

Runners extend their own leases from their event loop. A sync handler that has always been
quick runs inline on that loop's thread (``Executor.can_inline``); should it block one day, no
runner on the loop can heartbeat until it returns, and their leases would lapse: other workers
would take over instances that are still being run here. The keeper notices a loop that has
not ticked for a third of the lease and extends, from its own thread, every lease its runners
hold. A healthy loop never needs it, so it writes nothing then. A loop whose thread has died
is not stalled: it will never run those instances again, so the keeper lets their leases
lapse (other engines then take them over).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

from statemachine import errors
from statemachine.engine import outage
from statemachine.engine.runner_core import RunnerCore
from statemachine.engine.services import Services

_log = logging.getLogger("statemachine.leases")


class LeaseHolder(RunnerCore):
    """A runner's own lease: its heartbeat, and learning that it lost the lease. A part of
    ``InstanceRunner`` (runner.py); the fields it reads are declared in runner_core.py."""

    def wait_limit(self, beat: float) -> float:
        """How long to wait for handlers: until the next heartbeat, or the workflow's deadline
        if that comes first (``settled`` then times the instance out, whatever still runs)."""
        deadline = self.state.deadline
        if deadline is None or self.state.status == "compensating":
            return beat  # undoing may outlive the deadline
        return max(0.0, min(beat, (deadline - self.now).total_seconds()))

    def heartbeat(self, force: bool = False) -> None:
        """Extend the lease, at most every third of it: a heartbeat per step would double the commits."""
        now = self.now
        if (
            not force
            and self.last_beat is not None
            and (now - self.last_beat).total_seconds() < self.services.settings.lease / 3
        ):
            return
        self.last_beat = now
        until = now + timedelta(seconds=self.services.settings.lease)
        try:
            kept = self.services.repo.heartbeat(self.rec.id, self.epoch, now, until)
        except Exception as exc:  # the next beat tries again; fencing guards a lapsed lease
            if not outage.transient(exc):
                raise
            self.services.outage.failed(f"the heartbeat of instance {self.rec.id}", exc)
            return
        self.services.outage.ok()
        if not kept:
            raise errors.LeaseLost(f"instance {self.rec.id} was taken over")

    def abort(self) -> None:
        """The instance was taken from this runner (a cancel made in this process): cancel its
        async handlers and abandon its sync ones now, not at the next heartbeat. Loop thread."""
        self.aborted = True
        for task in self.inflight.values():
            task.cancel()

    def check_aborted(self) -> None:
        if self.aborted:
            raise errors.LeaseLost(f"instance {self.rec.id} was taken from this runner")


class LeaseKeeper:
    """Extends, from a thread of its own, the leases of the runners on a stalled loop (one of
    the engine's loops that has not ticked for a third of the lease)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statemachine-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        lease = self.services.settings.lease
        stalled: set[asyncio.AbstractEventLoop] = set()
        while not self._stop.wait(min(1.0, lease / 6)):
            now = time.monotonic()
            # a loop whose thread has ended is not among them: its leases lapse, and other
            # engines take those instances over
            late = {
                d.loop for d in self.services.executor.loops.running() if now - d.beat >= lease / 3
            }
            if late - stalled:
                _log.warning("an event loop is stalled (a handler blocking it?); keeping leases")
            stalled = late
            if not late:
                continue
            try:
                self.keep(late)
            except Exception as exc:  # the keeper must outlive a database hiccup
                if outage.transient(exc):
                    self.services.outage.failed("extending leases for a stalled loop", exc)
                else:
                    _log.exception("could not extend leases for a stalled loop")

    def keep(self, loops: set[asyncio.AbstractEventLoop]) -> None:
        """Extend every lease held by a runner on one of ``loops`` (fenced: a lost lease stays lost)."""
        now = self.services.clock.now()
        until = now + timedelta(seconds=self.services.settings.lease)
        for runner in list(self.services.local.held.values()):
            if runner.event_loop not in loops:
                continue
            try:
                if self.services.repo.heartbeat(runner.rec.id, runner.epoch, now, until):
                    self.services.local.leases_extended += 1
            except errors.StatemachineError as exc:
                if outage.transient(exc):
                    self.services.outage.failed("extending leases for a stalled loop", exc)
                continue
