"""Who is to blame when a worker dies: the rules a takeover and a worker's claim follow.

A worker that dies takes down every handler it was running, so a death cannot be blamed on one
instance while several ran. A takeover counts a *crash* against an instance only when a handler
of its was running; from one crash on it is a *suspect* and runs alone (its lease marked
``lease_alone``, the worker starting nothing else meanwhile), and only a death while it ran
alone counts towards dead-lettering (``recoveries`` past ``max_recoveries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statemachine.store.records import InstanceRecord


def handler_in_flight(state: dict[str, Any] | None) -> bool:
    """Whether a handler of the instance may have been running: a step in phase ``run`` is
    committed before its handler starts and replaced in the commit of its result."""
    extra = (state or {}).get("extra") or {}
    return any(isinstance(x, dict) and x.get("phase") == "run" for x in extra.values())


def takeover(state: dict[str, Any] | None, alone: bool) -> tuple[int, int]:
    """A dead worker's lease taken over: the (crashes, recoveries) it adds. A death counts
    against an instance only if its handler was running then, and is blamed on it (towards
    dead-lettering) only if it ran alone: else any neighbour's handler may have killed it."""
    if not handler_in_flight(state):
        return 0, 0
    return 1, int(alone)


@dataclass
class Takeover:
    """An instance a claim found due, with what taking it over adds."""

    rec: InstanceRecord  # as it is once claimed: epoch, crashes and recoveries moved on
    recovered: bool
    crashed: int
    blamed: int

    @classmethod
    def of(cls, rec: InstanceRecord, owner: str) -> Takeover:
        recovered = rec.lease_owner is not None and rec.lease_owner != owner
        crashed, blamed = takeover(rec.state, rec.lease_alone) if recovered else (0, 0)
        rec.lease_epoch += 1
        rec.crashes += crashed
        rec.recoveries += blamed
        return cls(rec, recovered, crashed, blamed)

    def params(self) -> dict[str, Any]:
        return {
            "p_id": self.rec.id,
            "p_epoch": self.rec.lease_epoch,
            "p_blamed": self.blamed,
            "p_crashed": self.crashed,
        }


def isolate(found: list[Takeover], idle: bool) -> tuple[list[Takeover], list[Takeover]]:
    """(to claim, suspects left): an idle worker takes the first suspect alone, a busy one
    every instance but the suspects."""
    suspects = [t for t in found if t.rec.crashes > 0]
    if suspects and idle:
        suspects[0].rec.lease_alone = True
        return suspects[:1], suspects[1:]
    for t in found:
        t.rec.lease_alone = False
    return [t for t in found if t.rec.crashes == 0], suspects
