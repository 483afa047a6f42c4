"""Keeps the engine's leases while its event loop is stalled.

Runners extend their own leases from the event loop. A sync handler that has always been quick
runs inline on that loop (``Executor.can_inline``); should it block one day, no runner on the
loop can heartbeat until it returns, and their leases would lapse: other workers would take
over instances that are still being run here. The keeper notices a loop that has not ticked
for a third of the lease and extends, from its own thread, every lease the engine's runners
hold. A healthy loop never needs it, so it writes nothing then. A loop whose thread has died
is not stalled: it will never run those instances again, so the keeper lets their leases
lapse (other engines then take them over) and stops.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from statemachine import errors, outage

if TYPE_CHECKING:
    from statemachine.engine import Engine
    from statemachine.worker import LoopThread

_log = logging.getLogger("statemachine.leases")


class LeaseKeeper:
    def __init__(self, engine: Engine, loop: LoopThread) -> None:
        self.engine = engine
        self.loop = loop
        self.extended = 0  # leases extended on behalf of a stalled loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statemachine-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        lease = self.engine.settings.lease
        stalled = False
        while not self._stop.wait(min(1.0, lease / 6)):
            if not self.loop.alive:  # dead, not stalled: nothing here will run them again
                _log.error("the event loop thread has died; its leases are left to expire")
                return
            if time.monotonic() - self.loop.beat < lease / 3:
                stalled = False
                continue
            if not stalled:
                stalled = True
                _log.warning("the event loop is stalled (a handler blocking it?); keeping leases")
            try:
                self.keep()
            except Exception as exc:  # the keeper must outlive a database hiccup
                if outage.transient(exc):
                    self.engine.outage.failed("extending leases for a stalled loop", exc)
                else:
                    _log.exception("could not extend leases for a stalled loop")

    def keep(self) -> None:
        """Extend every lease the engine's runners hold (fenced: a lease lost stays lost)."""
        now = self.engine.clock.now()
        until = now + timedelta(seconds=self.engine.settings.lease)
        for runner in list(self.engine.held.values()):
            try:
                if self.engine.repo.heartbeat(runner.rec.id, runner.epoch, now, until):
                    self.extended += 1
            except errors.StatemachineError as exc:
                if outage.transient(exc):
                    self.engine.outage.failed("extending leases for a stalled loop", exc)
                continue
