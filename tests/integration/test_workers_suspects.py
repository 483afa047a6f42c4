"""Who is blamed for a worker's death (``Repository.claim_due``), step by step.

A takeover counts a crash against an instance only when its handler was running (a step in
phase ``run``, committed before the handler starts); an instance with a crash is a suspect: an
idle worker claims it alone (``lease_alone``), a busy one leaves it, and only a death under an
alone lease counts towards dead-lettering (``recoveries``). ``programs/worker_poison.py`` plays
the same story with real processes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from statemachine import Engine, workflow
from statemachine.store import repository as repo
from statemachine.testing import ManualClock
from tests.integration import leasetime

LEASE = timedelta(seconds=30)


def _running(engine: Engine, iid: str, owner: str) -> None:
    """``owner`` claims ``iid`` and commits its step's start: its handler is in flight."""
    now = engine.clock.now()
    (claimed,) = [c for c in engine.store.claim_due(owner, now, now + LEASE, 10) if c[2].id == iid]
    epoch = claimed[0]
    values: dict[str, Any] = {
        "status": "running", "state": {"active": ["s"], "extra": {"s": {"phase": "run"}}},
        "current_step": "s", "output": None, "error": None, "wake_at": now, "started_at": now,
        "completed_at": None, "updated_at": now, "lease_expires_at": now + LEASE,
    }  # fmt: skip
    step = repo.StepWrite("s", "running", attempts=1, started_at=now)
    engine.store.commit_transition(repo.Transition(iid, epoch, repo.Columns(**values), [step]))


def _die(engine: Engine, clock: ManualClock) -> None:
    """Whoever holds leases dies: they run out."""
    clock.advance("31s")
    leasetime.lapse(engine, 31)


def test_a_suspect_is_claimed_alone_and_only_deaths_alone_are_blamed(
    engine: Engine, clock: ManualClock
) -> None:
    engine.action("noop")(lambda data: data)
    engine.register(workflow("suspects").task("s", "noop").build())
    engine.start("suspects", {}, "suspect")
    engine.start("suspects", {}, "idle")  # claimed, but no handler of its ran
    now = clock.now()
    engine.store.claim_due("w0", now, now + LEASE, 10)
    engine.store.release("suspect", 1)
    _running(engine, "suspect", "w1")
    _die(engine, clock)

    # a busy worker takes the idle one, not the suspect: it counts w1's death and leaves it
    now = clock.now()
    busy = engine.store.claim_due("w2", now, now + LEASE, 10)
    assert [(rec.id, recovered) for _, recovered, rec in busy] == [("idle", True)]
    assert busy.deferred == 1
    rec = engine.store.get("suspect")
    assert rec is not None and rec.lease_owner is None
    assert (rec.crashes, rec.recoveries, rec.lease_epoch) == (1, 0, 3)
    idle = engine.store.get("idle")
    assert idle is not None and (idle.crashes, idle.recoveries) == (0, 0)

    # an idle worker takes it alone; its death then is its own
    now = clock.now()
    alone = engine.store.claim_due("w3", now, now + LEASE, 10, idle=True)
    assert [(rec.id, rec.lease_alone) for _, _, rec in alone] == [("suspect", True)]
    _die(engine, clock)  # its step still in phase run: w3 dies running it
    now = clock.now()
    (again,) = engine.store.claim_due("w4", now, now + LEASE, 10, idle=True)
    assert again[1] and again[2].lease_alone
    rec = engine.store.get("suspect")
    assert rec is not None and (rec.crashes, rec.recoveries) == (2, 1)

    # a run that goes well clears the suspicion (not the deaths it was blamed for)
    engine.store.release("suspect", again[0], cleared=True)
    rec = engine.store.get("suspect")
    assert rec is not None and (rec.crashes, rec.recoveries, rec.lease_alone) == (0, 1, False)
