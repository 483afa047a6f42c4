"""What the parts of an instance's runner share: the fields ``InstanceRunner`` (runner.py) sets
when it is made, and the calls the parts make back into it (``apply``, ``now``).

The parts (``calls.StepCalls``, ``children.Inbox``, ``leases.LeaseHolder``) derive from it, so
each is typed against one declaration instead of repeating the fields and stubs it needs.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from statemachine.definition import models
from statemachine.engine.services import Services
from statemachine.runtime import interpreter as interp
from statemachine.runtime import plan as plans
from statemachine.runtime.outcome import Outcome
from statemachine.runtime.state import State
from statemachine.store import repository as repo


class RunnerCore(abc.ABC):
    services: Services
    rec: repo.InstanceRecord
    epoch: int  # of the lease this runner holds: every write is fenced on it
    definition: models.WorkflowDefinition
    plan: plans.Plan
    state: State
    inflight: dict[str, asyncio.Task[Outcome]]  # handler calls running, by step path
    emitted: dict[str, list[tuple[str, Any]]]  # by step path: its ctx.emit and ctx.log calls
    calls: dict[str, str]  # steps running a limited action, with its name (``StepCalls.gate``)
    deferrals: dict[str, datetime]  # steps whose call was refused by its limit: until when
    run_child: Callable[[str], Awaitable[bool]] | None  # runs a child here (``drive``)
    last_beat: datetime | None  # when the lease was last extended
    aborted: bool  # the instance was taken from this runner (``LeaseHolder.abort``)

    @property
    def now(self) -> datetime:
        return self.services.clock.now()

    @abc.abstractmethod
    async def apply(
        self,
        event: interp.Event,
        consume: list[int] | None = None,
        emitted: list[tuple[str, Any]] | None = None,
    ) -> interp.Decision:
        """Decide on ``event`` and commit the decision (``InstanceRunner.apply``)."""
