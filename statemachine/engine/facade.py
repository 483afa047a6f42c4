"""The facade users hold: register definitions and actions, start and control instances, run them."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from statemachine import errors, leases, outage, records, registry, worker
from statemachine import runner as runner_mod
from statemachine.definition import durations, expressions, issues, models, schemas
from statemachine.runtime import clock as clocks
from statemachine.runtime import events, executor, jsondata
from statemachine.runtime import interpreter as interp
from statemachine.runtime import plan as plans
from statemachine.runtime.state import is_item_result
from statemachine.store import repository as repo
from statemachine.store import tables

T = TypeVar("T")
_log = logging.getLogger("statemachine.engine")
ACTIVE = ("pending", "running", "waiting", "paused", "compensating")
CONTROL_ATTEMPTS = 10  # a control call re-reads and re-decides at most this often when it races
MAX_NESTING = 16  # subworkflow levels below a top-level instance (a self-recursive one stops)


def _seconds(value: Any, what: str) -> float:
    try:
        return durations.parse_duration(value)
    except durations.DurationSyntaxError as exc:
        raise errors.InputValidationError(f"{what}: {exc}") from None


def _trigger_matches(trigger: models.Trigger, name: str, data: Any) -> bool:
    """The event's top-level keys are names in the condition, besides ``event`` and ``input``."""
    if trigger.event != name:
        return False
    if not trigger.condition:
        return True
    names = dict(data) if isinstance(data, dict) else {}
    names.update(event=data, input=data)
    try:
        return expressions.compile_expression(trigger.condition).evaluate_condition(names)
    except errors.ExpressionError:
        return False  # a condition that cannot be evaluated on this data does not match


def _check_event_name(name: Any) -> None:
    jsondata.check_name(name, "an event's name", tables.ID_LENGTH)


def _findable(instance_id: Any) -> bool:
    """Whether some stored instance could have this id: one that none can is not looked up
    (a lone surrogate cannot even be sent to the database), it is simply not found."""
    return (
        isinstance(instance_id, str)
        and 0 < len(instance_id) <= tables.ID_LENGTH
        and jsondata.text_problem(instance_id) is None
    )


def _check_metadata_filter(metadata: Any) -> None:
    """``list(metadata=)`` compares scalar values: nested ones would match differently on
    SQLite and Postgres (JSON containment), so they are refused rather than half-supported."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise errors.InputValidationError("metadata filter must be a dict with string keys")
    for key, value in metadata.items():
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise errors.InputValidationError(
                f"metadata filter {key!r}: compare a string, number, boolean or None, "
                f"not {type(value).__name__}"
            )


@dataclass(frozen=True)
class EngineSettings:
    lease: float = 30.0  # seconds a claim lasts without a heartbeat
    inline_wait: float = 1.0  # timers this close are slept through in process (real clock only)
    max_recoveries: int = 5  # an instance that kills its worker this often is dead-lettered
    synchronous: str = "FULL"
    busy_timeout: float = 30.0  # SQLite: seconds a write waits for another's lock, then StoreError


class Engine:
    """Runs workflows durably on SQLite (default ``./statemachine.db``) or Postgres."""

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: clocks.Clock | None = None,
        worker_id: str | None = None,
        lease: Any = None,
        settings: EngineSettings | None = None,
    ) -> None:
        """``lease`` (default 30 s) wins over ``settings.lease`` when both are given."""
        base = settings or EngineSettings()
        self.settings = dataclasses.replace(
            base, lease=_seconds(lease, "lease") if lease is not None else base.lease
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
        self.registry = registry.Registry(self.repo, self.clock)
        self._loop: worker.LoopThread | None = None
        self.active_runners = 0  # instances being driven here; more than one: group commit
        self.held: dict[str, runner_mod.InstanceRunner] = {}  # runners holding a lease, by id
        self.outage = outage.Outage()  # whether the database is unreachable now (logged once)
        self._keeper: leases.LeaseKeeper | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- registration ------------------------------------------------------------------

    # -- registration (see registry.py) -------------------------------------------------
    def action(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@engine.action("chargeCard")`` registers the function under that name."""
        return self.registry.action(name)

    def register_actions(self, obj: Any) -> None:
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

    def resolve_action(self, target: Any) -> Callable[..., Any]:
        return self.registry.resolve_action(target)

    def definition(self, name: str) -> models.WorkflowDefinition:
        return self.registry.definition(name)

    def definitions(self) -> builtins.list[models.WorkflowDefinition]:
        return self.registry.definitions()

    def _definition_for(
        self, rec: repo.InstanceRecord, *, check_actions: bool = False
    ) -> models.WorkflowDefinition:
        return self.registry.definition_for(rec, check_actions=check_actions)

    # -- starting ----------------------------------------------------------------------
    def start(
        self,
        workflow: str,
        input: Any = None,
        instance_id: str | None = None,
        *,
        parent_id: str | None = None,
        _definition: models.WorkflowDefinition | None = None,
        _event: Any = None,
    ) -> str:
        """Record a new instance for a worker (or ``run_due``) to run; idempotent on ``instance_id``.
        ``_event``: the data of the event whose trigger started it (``emit``), bound to ``event``
        in its expressions."""
        new = self._new_instance(workflow, input, instance_id, parent_id, _definition, event=_event)
        if not self._insert(new):
            self._check_taken(new.record.id, new.record.workflow_name)
        return new.record.id

    def _check_taken(self, iid: str, workflow: str) -> None:
        """An id that exists is fine (starting is idempotent) unless another workflow holds it."""
        existing = self.repo.get(iid)
        if existing is not None and existing.workflow_name != workflow:
            raise errors.InvalidTransition(
                f"instance id {iid!r} is already used by workflow {existing.workflow_name!r}",
                instance_id=iid,
            )

    def _new_instance(
        self,
        workflow: str,
        input: Any,
        instance_id: str | None,
        parent_id: str | None = None,
        definition: models.WorkflowDefinition | None = None,
        *,
        claim: bool = False,
        event: Any = None,
    ) -> repo.NewInstance:
        """A validated instance, not yet stored; with ``claim`` it is born leased to this engine."""
        if self._closed:
            raise errors.StatemachineError("this engine is closed")
        definition = definition or self.definition(workflow)
        data = self._validate_input(definition, input)
        iid = instance_id or uuid.uuid4().hex
        if parent_id is not None:
            self._check_child(iid, parent_id)
        jsondata.check_name(iid, "instance_id", tables.ID_LENGTH)
        now = self.clock.now()
        # the trigger's event data lives in the state column (``State.trigger_event``), which
        # every transition rewrites from the state it restored: it stays bound after restarts
        state: dict[str, Any] = {} if event is None else {"event": event}
        owner = self.worker_id if claim else None
        until = now + timedelta(seconds=self.settings.lease) if claim else None
        values: dict[str, Any] = {
            "id": iid,
            "workflow_name": definition.name,
            "workflow_version": definition.version,
            "definition_hash": definition.hash,
            "status": "pending",
            "input": data,
            "metadata": {},
            "state": state,
            "parent_id": parent_id,
            "wake_at": now,
            "lease_epoch": 1 if claim else 0,
            "lease_owner": owner,
            "lease_expires_at": until,
            "recoveries": 0,
            "created_at": now,
            "updated_at": now,
        }
        started = repo.HistoryWrite(
            "workflow.started", None, {"input": data, "version": definition.version}, now
        )
        record = repo.InstanceRecord(
            id=iid, workflow_name=definition.name, workflow_version=definition.version,
            definition_hash=definition.hash, status="pending", current_step=None, input=data, output=None,
            error=None, metadata={}, state=state, parent_id=parent_id, wake_at=now, lease_owner=owner,
            lease_expires_at=until, lease_epoch=values["lease_epoch"], recoveries=0, created_at=now,
            started_at=None, completed_at=None,
        )  # fmt: skip
        return repo.NewInstance(values, [started], record)

    def _check_child(self, child_id: str, parent_id: str) -> None:
        """A subworkflow's child: its id (the parent's id and the step's path) must fit, and
        its depth stay within ``MAX_NESTING`` (a workflow that starts itself would not end)."""
        if len(child_id) > tables.ID_LENGTH:
            raise errors.InputValidationError(
                f"the child instance id {child_id[:60]!r}... would be {len(child_id)} characters, "
                f"more than {tables.ID_LENGTH}: it is the parent's id ({len(parent_id)} "
                "characters) and the subworkflow step's path; shorten either"
            )
        depth, above = 1, self.repo.get(parent_id)
        while above is not None and above.parent_id is not None:
            depth += 1
            if depth > MAX_NESTING:
                raise errors.StatemachineError(
                    f"subworkflows nest too deep: a child of {parent_id!r} would be at nesting "
                    f"depth {depth}, and the limit is {MAX_NESTING} (does a workflow start itself "
                    "without an end?)"
                )
            above = self.repo.get(above.parent_id)

    def _insert(self, new: repo.NewInstance) -> bool:
        if not self.repo.create_instance(new):
            return False
        self.announce(new.record)
        return True

    def announce(self, rec: repo.InstanceRecord) -> None:
        """Tell subscribers an instance exists, once its row is committed."""
        event = {
            "type": "workflow.started",
            "instance_id": rec.id,
            "workflow_name": rec.workflow_name,
            "input": rec.input,
        }
        self.publish_raw(event)

    def _validate_input(self, definition: models.WorkflowDefinition, input: Any) -> Any:
        if definition.input_schema is not None:
            try:
                input = schemas.conform(input, definition.input_schema)
            except schemas.Mismatch as exc:
                raise errors.InputValidationError(
                    f"input of workflow {definition.name!r} is invalid: {exc}",
                    errors=exc.problems,
                ) from None
        try:
            return jsondata.to_storable(input, what=f"input of workflow {definition.name!r}")
        except errors.OutputNotStorable as exc:
            raise errors.InputValidationError(str(exc)) from None

    def execute(
        self, workflow: str, input: Any = None, instance_id: str | None = None
    ) -> records.WorkflowInstance:
        """Start, then run here until the instance ends or waits (for a timer, an event, a worker)."""
        self._loop_thread()  # a closed engine refuses before anything is stored
        new = self._new_instance(workflow, input, instance_id, claim=True)
        iid, name = new.record.id, new.record.workflow_name
        kept: builtins.list[runner_mod.InstanceRunner] = []
        if instance_id is None and self.registry.max_concurrent(name) is None:
            # a fresh id cannot be taken: the insert rides on the run's first commit (one
            # fsync, not two); a capped workflow must insert first to count its slots
            try:
                self._call(worker.drive(self, iid, (1, new.record), keep=kept, birth=new))
            finally:
                if not kept or kept[0].birth is not None:  # the run never committed: store it
                    new.values.update(lease_owner=None, lease_expires_at=None)
                    self._insert(new)
        elif self._insert(new):
            self._call(worker.drive(self, iid, (1, new.record), keep=kept))
        else:
            self._check_taken(iid, name)
            self._call(worker.drive(self, iid, keep=kept))
        snapshot = kept[0].snapshot() if kept else None
        return snapshot or self.get(iid)  # a finished run needs no read-back

    # -- reading -----------------------------------------------------------------------
    def _record(self, instance_id: str) -> repo.InstanceRecord:
        if not _findable(instance_id):
            raise errors.InstanceNotFound(
                instance_id if isinstance(instance_id, str) else repr(instance_id)
            )
        rec = self.repo.get(instance_id)
        if rec is None:
            raise errors.InstanceNotFound(instance_id)
        return rec

    def get(self, instance_id: str) -> records.WorkflowInstance:
        rec = self._record(instance_id)
        return self._instance(rec)

    def _instance(self, rec: repo.InstanceRecord) -> records.WorkflowInstance:
        rows = [s for s in self.repo.steps(rec.id) if not is_item_result(s.step_name)]
        steps = {s.step_name: s for s in self._in_start_order(rec, rows)}
        return records.WorkflowInstance(
            id=rec.id,
            workflow_name=rec.workflow_name,
            workflow_version=rec.workflow_version,
            definition_hash=rec.definition_hash,
            status=rec.status,
            current_step=rec.current_step,
            input=rec.input,
            output=rec.output,
            error=rec.error,
            step_results=steps,
            metadata=rec.metadata,
            parent_id=rec.parent_id,
            created_at=rec.created_at,
            started_at=rec.started_at,
            completed_at=rec.completed_at,
            wake_at=rec.wake_at,
        )

    def _in_start_order(
        self, rec: repo.InstanceRecord, rows: builtins.list[records.StepResult]
    ) -> builtins.list[records.StepResult]:
        """Steps in the order they started, ties in the graph's order (``Plan.order_key``); a
        version this process cannot load (inline callables) breaks ties by path."""
        try:
            plan: plans.Plan | None = plans.plan_for(self._definition_for(rec))
        except errors.WorkflowNotFound:
            plan = None

        def key(s: records.StepResult) -> plans.OrderKey:
            if plan is None:
                return plans.order_key(s.step_name, s.started_at, s.completed_at, 0)
            return plan.order_key(s.step_name, s.started_at, s.completed_at)

        return sorted(rows, key=key)

    def list(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        metadata: Mapping[str, Any] | None = None,
        *,
        parent_id: str | None = None,
    ) -> list[records.WorkflowInstance]:
        """Instances, newest first; ``metadata={"customer": "c-1"}`` keeps those whose metadata
        has each of these keys with that value (strings, numbers, booleans or None);
        ``parent_id``: only the children of that instance."""
        _check_metadata_filter(metadata)
        if workflow is not None and not isinstance(workflow, str):
            raise errors.InputValidationError(
                f"workflow must be a workflow's name (a string) or None, not {workflow!r}"
            )
        if status is not None and status not in records.STATUSES:
            hint = issues.did_you_mean(status, records.STATUSES) if isinstance(status, str) else ""
            raise errors.InputValidationError(f"unknown status {status!r}{hint}")
        if not (
            isinstance(limit, int)
            and 0 < limit <= 10_000
            and isinstance(offset, int)
            and offset >= 0
        ):
            raise errors.InputValidationError("limit must be 1..10000 and offset >= 0")
        if workflow is not None and jsondata.text_problem(workflow) is not None:
            return []  # no workflow is named so (and the database could not be asked)
        return [
            self._instance(r)
            for r in self.repo.list_instances(
                workflow, status, limit, offset, parent_id, metadata=metadata
            )
        ]

    def history(self, instance_id: str) -> builtins.list[records.HistoryEntry]:
        self._record(instance_id)
        return self.repo.history(instance_id)

    # -- events ------------------------------------------------------------------------
    def on(self, pattern: str, callback: events.Listener) -> Callable[[], None]:
        return self.bus.on(pattern, callback)

    def publish(
        self, rec: repo.InstanceRecord, type_: str, step: str | None, data: dict[str, Any]
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

    def finished(self, instance_id: str, definition: models.WorkflowDefinition) -> None:
        if definition.on_complete is not None:
            try:
                definition.on_complete(self.get(instance_id))
            except Exception:  # a callback must not break the engine
                _log.exception("on_complete of %s failed", instance_id)

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver to a waiting instance, or keep in its inbox until it waits for ``name``."""
        _check_event_name(name)
        rec = self._record(instance_id)
        if rec.status in records.TERMINAL:
            raise errors.InvalidTransition(
                f"instance {instance_id} is {rec.status}; it takes no more events",
                instance_id=instance_id,
                status=rec.status,
            )
        try:
            payload = jsondata.to_storable(data, what=f"data of event {name!r}")
        except errors.OutputNotStorable as exc:
            raise errors.InputValidationError(str(exc)) from None
        now = self.clock.now()
        self.repo.add_event(instance_id, name, payload, now, wake=True)

    def emit(self, name: str, data: Any = None) -> builtins.list[str]:
        """Start every registered workflow with a trigger matching this event; all or none.

        Every matching workflow's input is checked first, so an event that one of them refuses
        starts nothing (InputValidationError) instead of leaving half of them started.
        """
        _check_event_name(name)
        matching = [
            d
            for d in self.definitions()
            if any(_trigger_matches(t, name, data) for t in d.triggers)
        ]
        if not matching:
            return []
        for definition in matching:
            self._validate_input(definition, data)
        try:
            event = jsondata.to_storable(data, what=f"data of event {name!r}")
        except errors.OutputNotStorable as exc:
            raise errors.InputValidationError(str(exc)) from None
        return [
            self.start(definition.name, data, _definition=definition, _event=event)
            for definition in matching
        ]

    def update_metadata(self, instance_id: str, patch: dict[str, Any]) -> None:
        if not isinstance(patch, dict):
            raise errors.InputValidationError("metadata must be a dict")
        rec = self._record(instance_id)
        try:
            merged = jsondata.to_storable({**rec.metadata, **patch}, what="metadata")
        except errors.OutputNotStorable as exc:
            raise errors.InputValidationError(str(exc)) from None
        self.repo.set_metadata(instance_id, merged, self.clock.now())

    def set_metadata_key(self, instance_id: str, key: str, value: Any) -> None:
        self.update_metadata(instance_id, {key: value})

    # -- control -----------------------------------------------------------------------
    def _control(
        self,
        instance_id: str,
        allowed: tuple[str, ...],
        verb: str,
        values: dict[str, Any],
        event: str,
        fence: bool = False,
        decide: Callable[[repo.InstanceRecord], interp.Decision | None] | None = None,
        notify_parent: bool = False,
    ) -> None:
        """Commit a control call: read, check, decide, and compare-and-set, again (a bounded
        number of times) when the instance changed between the read and the commit. A fenced
        call that lost such a race takes the lease first, so no runner commits in between
        (see ``_fence``); the first try fences in its own commit, so a caller never sees the
        runner stopped before the control call is recorded."""
        for attempt in range(CONTROL_ATTEMPTS):
            if fence and attempt:
                self._fence(instance_id, allowed, verb)
            rec = self._allowed(instance_id, allowed, verb)
            decision = decide(rec) if decide is not None else None
            if self._control_commit(rec, values, event, fence, decision, notify_parent):
                return
        raise errors.StatemachineError(
            f"could not {verb} instance {instance_id}: it kept changing; try again"
        )

    def _allowed(
        self, instance_id: str, allowed: tuple[str, ...], verb: str
    ) -> repo.InstanceRecord:
        rec = self._record(instance_id)
        if rec.status not in allowed:
            raise errors.InvalidTransition(
                f"cannot {verb} instance {instance_id}: it is {rec.status} (allowed when {', '.join(allowed)})",
                instance_id=instance_id,
                status=rec.status,
            )
        return rec

    def _fence(self, instance_id: str, allowed: tuple[str, ...], verb: str) -> None:
        """Take the instance from whichever runner holds it: its next commit fails (LeaseLost),
        so the state read next is the one the control call decides on. A runner here stops now."""
        fence = {
            "lease_epoch": repo.IT.c.lease_epoch + 1,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        t = repo.Transition(instance_id, None, fence, expect_status=allowed)
        if not self.repo.commit_transition(t):
            self._allowed(instance_id, allowed, verb)  # raises, unless it changed back meanwhile

    def _control_commit(
        self,
        rec: repo.InstanceRecord,
        values: dict[str, Any],
        event: str,
        fence: bool,
        decision: interp.Decision | None,
        notify_parent: bool,
    ) -> bool:
        """One compare-and-set: False if the instance changed since ``rec`` was read."""
        now = self.clock.now()
        vals = {**values, "updated_at": now}
        if fence:
            vals.update(
                lease_epoch=repo.IT.c.lease_epoch + 1, lease_owner=None, lease_expires_at=None
            )
        steps: builtins.list[repo.StepWrite] = []
        history = [repo.HistoryWrite(event, None, {}, now)]
        if decision is not None:
            vals["state"] = decision.state.frontier_json()
            steps = runner_mod.step_writes(decision.state, decision.changed)
            history = [repo.HistoryWrite(h.type, h.step, h.data, now) for h in decision.history]
        notify = []
        if notify_parent:
            notify = runner_mod.child_notice(rec, vals["status"], None, vals.get("error"))
        done = self.repo.commit_transition(
            repo.Transition(
                rec.id, None, vals, steps, history, [], notify,
                expect_status=(rec.status,),
                expect_seq=rec.history_seq if decision is not None else None,
            )
        )  # fmt: skip
        if not done:
            return False
        if fence:
            self._interrupt(rec.id)
        for h in history:
            self.publish(rec, h.type, h.step, h.data)
        if vals.get("status") in records.TERMINAL:
            self.finished(rec.id, self._definition_for(rec))
        return True

    def _interrupt(self, instance_id: str) -> None:
        """A runner of this engine that held the instance learns at once that it lost it."""
        held, loop = self.held.get(instance_id), self._loop
        if held is not None and loop is not None:
            loop.loop.call_soon_threadsafe(held.abort)

    def pause(self, instance_id: str) -> None:
        self._control(
            instance_id,
            ("pending", "running", "waiting"),
            "pause",
            {"status": "paused"},
            "workflow.paused",
        )

    def resume(self, instance_id: str) -> None:
        rec = self._record(instance_id)
        status = "pending" if rec.started_at is None else "running"
        self._control(
            instance_id,
            ("paused",),
            "resume",
            {"status": status, "wake_at": self.clock.now()},
            "workflow.resumed",
        )

    def cancel(self, instance_id: str) -> None:
        now = self.clock.now()
        self._control(
            instance_id,
            ACTIVE,
            "cancel",
            {
                "status": "cancelled",
                "wake_at": None,
                "completed_at": now,
                "error": {"type": "Cancelled", "message": "cancelled"},
            },
            "workflow.cancelled",
            fence=True,
            decide=lambda rec: self._decide(rec, interp.Cancel()),
            notify_parent=True,
        )
        for child in self.repo.list_instances(None, ACTIVE, 1000, 0, parent_id=instance_id):
            with contextlib.suppress(errors.InvalidTransition):
                self.cancel(child.id)

    def _decide(self, rec: repo.InstanceRecord, event: interp.Event) -> interp.Decision:
        definition = self._definition_for(rec)
        plan = plans.plan_for(definition)
        state = runner_mod.load_state(self.repo, rec, plan)
        return interp.decide(plan, state, event, self.clock.now(), rec.id)

    def retry(self, instance_id: str) -> None:
        rec = self._record(instance_id)
        if rec.status != "failed":
            raise errors.InvalidTransition(
                f"cannot retry instance {instance_id}: it is {rec.status}, not failed",
                instance_id=instance_id,
                status=rec.status,
            )
        self._control(
            instance_id,
            ("failed",),
            "retry",
            {
                "status": "running",
                "wake_at": self.clock.now(),
                "error": None,
                "completed_at": None,
                "output": None,
                # a dead-lettered instance starts counting its workers' deaths afresh (DBOS's
                # resume does the same): else one more crash dead-letters it again at once
                "recoveries": 0,
                "crashes": 0,
            },
            "workflow.retried",
            fence=True,
            decide=lambda rec: self._decide(rec, interp.Retry()),
        )

    def replay(self, instance_id: str) -> str:
        rec = self._record(instance_id)
        definition = self._definition_for(rec)
        event = rec.state.get("event")  # started by a trigger: the same event again
        return self.start(rec.workflow_name, rec.input, _definition=definition, _event=event)

    # -- running -----------------------------------------------------------------------
    def _loop_thread(self) -> worker.LoopThread:
        with self._lock:
            if self._closed:
                raise errors.StatemachineError("this engine is closed")
            if self._loop is None:
                self._loop = worker.LoopThread()
                self._keeper = leases.LeaseKeeper(self, self._loop)
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = self._loop_thread()
        except errors.StatemachineError:
            coro.close()  # never scheduled: close it so Python does not warn
            raise
        try:
            return loop.call(coro)
        except executor.HandlerInterrupted as exc:  # a handler's SystemExit, KeyboardInterrupt...
            raise exc.original from None  # ... is the caller's: the instance waits for recovery

    def run_due(self) -> int:
        """Run here every instance that is due now; returns how many advanced."""
        return self._call(worker.drain(self))

    def run_worker(
        self, concurrency: int = 8, poll_interval: Any = "1s", grace: Any = "30s"
    ) -> None:
        """Blocking worker loop; SIGTERM/SIGINT, or a handler's SystemExit/KeyboardInterrupt,
        stop claiming and let running steps finish, for ``grace`` at most (their leases kept
        meanwhile); what still runs then has its lease released for another worker to take
        over at once. A second SIGTERM/SIGINT cuts the grace short. Then it returns.
        A database that goes away meanwhile is waited for (``outage``), not an error.
        The process is a worker until it returns: the garbage collector is tuned for that
        meanwhile (``worker.tuned_collector``); the ``worker()`` context leaves it alone."""
        poll = _seconds(poll_interval, "poll_interval")
        wait = _seconds(grace, "grace")
        stop, hurry = threading.Event(), threading.Event()

        def signalled(*_: Any) -> None:
            if stop.is_set():
                hurry.set()
            stop.set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, signalled)
        try:
            with worker.tuned_collector():
                self._call(worker.work(self, concurrency, poll, stop, wait, hurry))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def worker(
        self, concurrency: int = 8, poll_interval: Any = "100ms", grace: Any = "30s"
    ) -> Iterator[concurrent.futures.Future[None]]:
        """A worker on the engine's loop while the block runs; the block gets its future (done
        once the worker ended: crashed or stopped), which ``create_app(worker=)`` reports.
        Leaving the block stops it as ``run_worker`` stops on SIGTERM (``grace`` included)."""
        poll = _seconds(poll_interval, "poll_interval")
        wait = _seconds(grace, "grace")
        stop = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(
            worker.work(self, concurrency, poll, stop, wait), self._loop_thread().loop
        )
        try:
            yield fut
        finally:
            stop.set()
            fut.result(timeout=wait + self.settings.lease + 10)

    def prune(self, older_than: Any = "30d") -> int:
        """Delete finished instances (and their history) completed more than ``older_than`` ago."""
        cutoff = self.clock.now() - timedelta(seconds=_seconds(older_than, "older_than"))
        removed = self.repo.prune(cutoff)
        self.repo.checkpoint()
        return removed

    def wait(self, instance_id: str, timeout: float | None = None) -> records.WorkflowInstance:
        """Block until the instance reaches a terminal status (something else must run it)."""
        deadline = None if timeout is None else time.monotonic() + _seconds(timeout, "timeout")
        while True:
            inst = self.get(instance_id)
            if inst.is_terminal:
                return inst
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"instance {instance_id} is still {inst.status} after {timeout}s"
                )
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
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
