"""What the engine's parts share: one frozen ``Services`` handed to the runner, the worker and
the lease keeper, instead of the ``Engine`` itself.

With the facade out of their reach, the parts import downwards only (no cycle through the
engine), and each part's needs are spelled out here: the store, the clock, the executor, the
settings, the registry, the event bus, and this process's bookkeeping (``Local``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from statemachine.engine.executor import Executor
from statemachine.engine.outage import Outage
from statemachine.engine.registry import Registry
from statemachine.engine.settings import EngineSettings
from statemachine.runtime.clock import Clock
from statemachine.runtime.events import EventBus
from statemachine.store.repository import InstanceRecord, NewInstance, Repository


class HeldRunner(Protocol):
    """A runner holding an instance's lease here, as the bookkeeping sees it."""

    rec: InstanceRecord
    epoch: int
    birth: NewInstance | None
    event_loop: asyncio.AbstractEventLoop  # the loop it runs on

    def abort(self) -> None: ...


@dataclass
class Local:
    """What this engine holds in this process now (mutable, unlike the ``Services`` around it)."""

    held: dict[str, HeldRunner] = field(default_factory=dict)  # runners holding a lease, by id
    active_runners: int = 0  # instances being driven here; more than one: group commit
    closed: bool = False  # the engine was closed: nothing new starts
    leases_extended: int = 0  # leases the keeper extended while the loop was stalled
    # when the stored limits per action were read, and the limited actions (``limits.limited``)
    action_limits: tuple[datetime, frozenset[str]] | None = None

    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_runner(self, delta: int) -> None:
        """``active_runners += delta``, atomically: runs on several threads' loops count at once."""
        with self._count_lock:
            self.active_runners += delta

    def interrupt(self, instance_id: str) -> None:
        """A runner here that held the instance learns at once that it lost it (any thread)."""
        held = self.held.get(instance_id)
        if held is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: it runs nothing more
                held.event_loop.call_soon_threadsafe(held.abort)


@dataclass(frozen=True)
class Services:
    repo: Repository
    clock: Clock
    executor: Executor
    settings: EngineSettings
    registry: Registry
    outage: Outage  # whether the database is unreachable now (logged once)
    bus: EventBus
    worker_id: str
    local: Local
    # a parent's runner retries its failed child (``Engine.retry``: a control call, above us)
    retry: Callable[[str], None]

    def publish(
        self, rec: InstanceRecord, type_: str, step: str | None, data: dict[str, Any]
    ) -> None:
        if not self.bus.listening:
            return
        self.publish_raw(
            {
                "type": type_,
                "instance_id": rec.id,
                "workflow_name": rec.workflow_name,
                "step": step,
                **data,
            }
        )

    def publish_raw(self, event: dict[str, Any]) -> None:
        self.bus.publish(event)

    def announce(self, rec: InstanceRecord) -> None:
        """Tell subscribers an instance exists, once its row is committed."""
        event = {
            "type": "workflow.started",
            "instance_id": rec.id,
            "workflow_name": rec.workflow_name,
            "input": rec.input,
        }
        self.publish_raw(event)
