"""The facade users hold: register definitions and actions, start and control instances, run them.

Each call is a thin door to the module that does the job (``inputs``, ``queries``, ``control``,
``drive``, ``worker``), all of which work on the engine's ``Services``, never on the ``Engine``.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from statemachine import errors, observability, records
from statemachine.definition import models
from statemachine.engine import (
    control,
    drive,
    executor,
    inputs,
    leases,
    limits,
    migration,
    outage,
    queries,
    worker,
)
from statemachine.engine import schedules as scheduling
from statemachine.engine.loop import LoopThread, tuned_collector
from statemachine.engine.registry import Registry
from statemachine.engine.runner import InstanceRunner
from statemachine.engine.services import Local, Services
from statemachine.engine.settings import EngineSettings, seconds
from statemachine.runtime import clock as clocks
from statemachine.runtime import events
from statemachine.runtime.migration import MigrationPlan
from statemachine.store import repository as repo
from statemachine.store import tables
from statemachine.store.port import Store
from statemachine.vocabulary import JSON, Duration, JSONObject

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


class Engine:
    """Runs workflows durably on SQLite (default ``./statemachine.db``) or Postgres."""

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: clocks.Clock | None = None,
        worker_id: str | None = None,
        lease: Duration | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        """``lease`` (default 30 s) wins over ``settings.lease`` when both are given."""
        base = settings or EngineSettings()
        self.settings = dataclasses.replace(
            base, lease=seconds(lease, "lease") if lease is not None else base.lease
        )
        self.clock: clocks.Clock = clock or clocks.SystemClock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not isinstance(self.worker_id, str) or len(self.worker_id) > tables.ID_LENGTH:
            raise errors.InputValidationError(
                f"worker_id must be a string of at most {tables.ID_LENGTH} characters"
            )
        self.repo = repo.Repository(
            url, synchronous=self.settings.synchronous, busy_timeout=self.settings.busy_timeout
        )
        self.executor = executor.Executor()
        self.bus = events.EventBus()
        observability.instrument(self)  # spans of step attempts, once OpenTelemetry is set up
        self.registry = Registry(self.repo, self.clock)
        self.outage = outage.Outage()  # whether the database is unreachable now (logged once)
        self.services = Services(
            repo=self.repo, clock=self.clock, executor=self.executor, settings=self.settings,
            registry=self.registry, outage=self.outage, bus=self.bus, worker_id=self.worker_id,
            local=Local(), retry=self.retry,
        )  # fmt: skip
        self._keeper: leases.LeaseKeeper | None = None
        self._thread: LoopThread | None = None  # a worker in the background (``worker()``)
        self._lock = threading.Lock()

    # -- registration (see registry.py) -------------------------------------------------
    def action(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@engine.action("chargeCard")`` registers the function under that name."""
        decorate = self.registry.action(name)

        def register(fn: F) -> F:
            decorate(fn)
            return fn

        return register

    def register_actions(self, obj: object) -> None:
        """Every public method of ``obj`` (or public function of a module) becomes an action."""
        self.registry.register_actions(obj)

    def register(
        self,
        definition: models.WorkflowDefinition | Iterable[models.WorkflowDefinition],
        max_concurrent: int | None = None,
        *,
        check_actions: bool = True,
        revive: bool = True,
    ) -> None:
        """Register definitions; ``check_actions=False`` suits processes that only start or
        inspect; ``revive=False`` leaves an unregistered version unregistered (the CLI)."""
        self.registry.register(
            definition, max_concurrent, check_actions=check_actions, revive=revive
        )

    def unregister(self, workflow: str, version: str | None = None) -> None:
        """No new instances of ``workflow`` (every version, or ``version``), for every engine on
        the database; running instances finish on their version. ``register`` brings it back."""
        self.registry.unregister(workflow, None if version is None else str(version))

    def limit_action(
        self, name: str, rate: str | None = None, concurrency: int | None = None
    ) -> None:
        """Limit calls of action ``name`` for every engine on the database: at most ``rate``
        ('N/s', 'N/m', 'N/h') started in any window of that length, ``concurrency`` running
        at once. A step over it waits (``waiting``, with the next free slot as ``wake_at``)
        and uses up no attempt. Both None: no limit. The action need not be registered here."""
        limits.limit_action(self.services, name, rate, concurrency)

    def resolve_action(self, target: str | Callable[..., object]) -> Callable[..., object]:
        return self.registry.resolve_action(target)

    def definition(self, name: str) -> models.WorkflowDefinition:
        return self.registry.definition(name)

    def definitions(self) -> builtins.list[models.WorkflowDefinition]:
        return self.registry.definitions()

    # -- starting (see inputs.py) -------------------------------------------------------
    def start(
        self,
        workflow: str,
        input: JSON = None,
        instance_id: str | None = None,
        *,
        parent_id: str | None = None,
        priority: int | None = None,
    ) -> str:
        """Record a new instance for a worker (or ``run_due``) to run; idempotent on ``instance_id``.
        ``priority`` (higher is claimed first) overrides the definition's."""
        return inputs.start(
            self.services, workflow, input, instance_id, parent_id=parent_id, priority=priority
        )

    def execute(
        self, workflow: str, input: JSON = None, instance_id: str | None = None
    ) -> records.WorkflowInstance:
        """Start, then run here until the instance ends or waits (for a timer, an event, a worker)."""
        self._open()  # a closed engine refuses before anything is stored
        services = self.services
        new = inputs.new_instance(services, workflow, input, instance_id, claim=True)
        iid, name = new.record.id, new.record.workflow_name
        kept: builtins.list[InstanceRunner] = []
        capped = self.registry.max_concurrent(name) is not None
        if instance_id is None and not capped and new.record.concurrency_key is None:
            # a fresh id cannot be taken: the insert rides on the run's first commit (one
            # fsync, not two); a capped workflow must insert first to count its slots
            try:
                self._call(drive.drive(services, iid, (1, new.record), keep=kept, birth=new))
            finally:
                if not kept or kept[0].birth is not None:  # the run never committed: store it
                    new.values.update(lease_owner=None, lease_expires_at=None)
                    inputs.insert(services, new)
        elif inputs.insert(services, new):
            self._call(drive.drive(services, iid, (1, new.record), keep=kept))
        else:
            inputs.check_taken(services, iid, name)
            self._call(drive.drive(services, iid, keep=kept))
        snapshot = kept[0].snapshot() if kept else None
        return snapshot or self.get(iid)  # a finished run needs no read-back

    def send_event(self, instance_id: str, name: str, data: JSON = None) -> None:
        """Deliver to a waiting instance, or keep in its inbox until it waits for ``name``."""
        inputs.send_event(self.services, instance_id, name, data)

    def emit(
        self, name: str, data: JSON = None, idempotency_key: str | None = None
    ) -> builtins.list[str]:
        """Start every registered workflow with a trigger matching this event; all or none.

        Every matching workflow's input is checked first, so an event that one of them refuses
        starts nothing (InputValidationError) instead of leaving half of them started. The
        same ``idempotency_key`` again (for this event) starts nothing and returns the same
        ids, across processes, until ``prune`` removes keys older than its cutoff.
        """
        return inputs.emit(self.services, name, data, idempotency_key)

    def update_metadata(self, instance_id: str, patch: JSONObject) -> None:
        inputs.update_metadata(self.services, instance_id, patch)

    def set_metadata_key(self, instance_id: str, key: str, value: JSON) -> None:
        inputs.set_metadata_key(self.services, instance_id, key, value)

    # -- reading (see queries.py) -------------------------------------------------------
    def get(self, instance_id: str) -> records.WorkflowInstance:
        return queries.get(self.services, instance_id)

    def list(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        metadata: JSONObject | None = None,
        *,
        parent_id: str | None = None,
    ) -> builtins.list[records.WorkflowInstance]:
        """Instances, newest first; ``metadata={"customer": "c-1"}`` keeps those whose metadata
        has each of these keys with that value (strings, numbers, booleans or None);
        ``parent_id``: only the children of that instance."""
        return queries.list_instances(
            self.services, workflow, status, limit, offset, metadata, parent_id
        )

    def history(self, instance_id: str) -> builtins.list[records.HistoryEntry]:
        return queries.history(self.services, instance_id)

    def on(self, pattern: str, callback: Callable[[dict[str, JSON]], object]) -> Callable[[], None]:
        """Call ``callback`` with each event whose type matches ``pattern`` (``*`` globs)."""
        return self.bus.on(pattern, callback)

    # -- control (see control.py) -------------------------------------------------------
    def pause(self, instance_id: str) -> None:
        control.pause(self.services, instance_id)

    def resume(self, instance_id: str) -> None:
        control.resume(self.services, instance_id)

    def cancel(self, instance_id: str) -> None:
        control.cancel(self.services, instance_id)

    def retry(self, instance_id: str) -> None:
        control.retry(self.services, instance_id)

    def replay(self, instance_id: str) -> str:
        return control.replay(self.services, instance_id)

    def plan_migration(
        self, workflow: str, to: models.WorkflowDefinition | str,
        mapping: Mapping[str, str] | None = None, instances: Iterable[str] | None = None,
    ) -> MigrationPlan:  # fmt: skip
        """Whether ``instances`` (None: all not over) can move to ``to``; changes nothing."""
        return migration.plan(self.services, workflow, to, mapping, instances)

    def migrate(self, plan: MigrationPlan) -> builtins.list[str]:
        """Move the instances ``plan`` found ok, each checked again; returns their ids."""
        return migration.apply(self.services, plan)

    # -- running (see drive.py, worker.py) ----------------------------------------------
    def _open(self) -> None:
        """Refuse once closed; else make sure the lease keeper watches this engine's loops."""
        with self._lock:
            if self.services.local.closed:
                raise errors.StatemachineError("this engine is closed")
            if self._keeper is None:
                self._keeper = leases.LeaseKeeper(self.services)

    def _loop_thread(self) -> LoopThread:
        self._open()
        with self._lock:
            if self._thread is None:
                self._thread = LoopThread(self.executor.loops)
            return self._thread

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the calling thread, on a loop of its own (``loop.Loops``)."""
        try:
            self._open()
        except errors.StatemachineError:
            coro.close()  # never scheduled: close it so Python does not warn
            raise
        try:
            return self.executor.loops.run(coro)
        except executor.HandlerInterrupted as exc:  # a handler's SystemExit, KeyboardInterrupt...
            raise exc.original from None  # ... is the caller's: the instance waits for recovery

    def run_due(self) -> int:
        """Fire the due ticks of every schedule, then run here every instance that is due
        now; returns how many advanced."""
        scheduling.fire_due(self.services)
        return self._call(drive.drain(self.services))

    # -- schedules (see schedules.py) ----------------------------------------------------
    def schedules(self, workflow: str | None = None) -> builtins.list[records.ScheduleInfo]:
        """Every schedule on the database (or ``workflow``'s), with its next fire time."""
        return scheduling.infos(self.services, workflow)

    def pause_schedule(self, workflow: str) -> None:
        """No tick of ``workflow``'s schedules fires, on any engine, until resumed."""
        scheduling.set_paused(self.services, workflow, True)

    def resume_schedule(self, workflow: str) -> None:
        """Fire again; ticks passed meanwhile follow the schedule's ``catchup``."""
        scheduling.set_paused(self.services, workflow, False)

    def run_worker(
        self, concurrency: int = 8, poll_interval: Duration = "1s", grace: Duration = "30s"
    ) -> None:
        """Blocking worker loop; SIGTERM/SIGINT, or a handler's SystemExit/KeyboardInterrupt,
        stop claiming and let running steps finish, for ``grace`` at most (their leases kept
        meanwhile); what still runs then has its lease released for another worker to take
        over at once. A second SIGTERM/SIGINT cuts the grace short. Then it returns.
        A database that goes away meanwhile is waited for (``outage``), not an error.
        The process is a worker until it returns: the garbage collector is tuned for that
        meanwhile (``loop.tuned_collector``); the ``worker()`` context leaves it alone."""
        poll = seconds(poll_interval, "poll_interval")
        wait = seconds(grace, "grace")
        with worker.stop_signals() as (stop, hurry), tuned_collector():
            self._call(worker.work(self.services, concurrency, poll, stop, wait, hurry))

    @contextlib.contextmanager
    def worker(
        self, concurrency: int = 8, poll_interval: Duration = "100ms", grace: Duration = "30s"
    ) -> Iterator[concurrent.futures.Future[None]]:
        """A worker on the engine's loop while the block runs; the block gets its future (done
        once the worker ended: crashed or stopped), which ``create_app(worker=)`` reports.
        Leaving the block stops it as ``run_worker`` stops on SIGTERM (``grace`` included)."""
        poll = seconds(poll_interval, "poll_interval")
        wait = seconds(grace, "grace")
        stop = threading.Event()
        thread = self._loop_thread()
        fut = asyncio.run_coroutine_threadsafe(
            worker.work(self.services, concurrency, poll, stop, wait), thread.loop
        )
        try:
            yield fut
        finally:
            stop.set()
            thread.wait(fut, timeout=wait + self.settings.lease + 10)

    def prune(self, older_than: Duration = "30d") -> int:
        """Delete finished instances (and their history) completed more than ``older_than`` ago."""
        cutoff = self.clock.now() - timedelta(seconds=seconds(older_than, "older_than"))
        removed = self.repo.prune(cutoff)
        self.repo.checkpoint()
        return removed

    def wait(self, instance_id: str, timeout: Duration | None = None) -> records.WorkflowInstance:
        """Block until the instance reaches a terminal status (something else must run it)."""
        deadline = None if timeout is None else time.monotonic() + seconds(timeout, "timeout")
        while True:
            inst = self.get(instance_id)
            if inst.is_terminal:
                return inst
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"instance {instance_id} is still {inst.status} after {timeout}s"
                )
            time.sleep(0.02)

    @property
    def store(self) -> Store:
        """The engine's database through the ``Store`` port: for tests and tools that need what
        lies below the public API (claims, raw history), never the SQL behind it."""
        return self.repo

    def close(self) -> None:
        local = self.services.local
        with self._lock:
            local.closed = True
            loop, self._thread = self._thread, None
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        if loop is not None:
            loop.stop()
        self.executor.close()
        self.repo.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
