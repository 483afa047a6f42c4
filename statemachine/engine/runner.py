"""Drives one claimed instance: decide, commit, run handlers, repeat, until it waits or ends.

Every transition is one fenced commit (step rows + instance state + history); a handler runs
outside any transaction and its result is committed with the transition it causes. A crash
between the two re-runs the handler with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from statemachine import errors, outage, records
from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata, saga
from statemachine.runtime import interpreter as interp
from statemachine.runtime import plan as plans
from statemachine.runtime.context import LOG_ENTRY, StepContext
from statemachine.runtime.executor import Outcome
from statemachine.runtime.state import TERMINAL, State, is_item_result
from statemachine.store import committer
from statemachine.store import repository as repo
from statemachine.vocabulary import InstanceStatus

if TYPE_CHECKING:
    from statemachine.engine import Engine

_log = logging.getLogger("statemachine.runner")
# what an operator watches a worker for; execute() and run_due() return it to their caller,
# and a script that shows a failure on purpose should not print it twice
_reports = logging.getLogger("statemachine.worker")
REPORTED = {
    "workflow.step.retry": logging.INFO,  # expected now and then: not shown by default
    "workflow.step.failed": logging.WARNING,
    "workflow.failed": logging.ERROR,
    "workflow.timed_out": logging.ERROR,
}
ACTIVE = ("running", "waiting", "compensating")


@dataclass
class Driven:
    advanced: bool = False
    status: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


def load_state(
    store: repo.Repository | None, record: repo.InstanceRecord, plan: plans.Plan
) -> State:
    """The interpreter's state of an instance; the plain-path copies of map items are for readers."""
    rows = [] if store is None else store.steps(record.id)
    steps = [r for r in rows if r.step_name not in plan.in_maps]
    return State.restore(
        status=record.status, input=record.input, metadata=record.metadata, frontier=record.state,
        steps=steps, output=record.output, error=record.error,
        started_at=record.started_at, completed_at=record.completed_at,
    )  # fmt: skip


def step_writes(state: State, changed: set[str]) -> list[repo.StepWrite]:
    """Rows for the steps a decision changed; a map item's step also shows, as the latest
    result, at its plain path (``map/iterator/step``), as API.md promises readers."""
    writes = [InstanceRunner._step_write(state, p) for p in sorted(changed) if p in state.steps]
    return writes + [
        replace(w, path=plans.template_path(w.path))
        for w in writes
        if "@" in w.path and not is_item_result(w.path)
    ]


def child_notice(
    rec: repo.InstanceRecord, status: str, output: Any, error: dict[str, Any] | None
) -> list[tuple[str, str, Any]]:
    """The event that tells a child's parent it ended; sent in the commit that ends the child,
    by its runner or by whatever else ends it (a cancel, a dead-letter)."""
    if rec.parent_id is None:
        return []
    return [
        (rec.parent_id, f"child:{rec.id}", {"status": status, "output": output, "error": error})
    ]


class InstanceRunner:
    """One claimed instance in this process."""

    def __init__(
        self,
        engine: Engine,
        record: repo.InstanceRecord,
        epoch: int,
        definition: models.WorkflowDefinition,
        *,
        fresh: bool = False,
        stop: threading.Event | None = None,
        birth: repo.NewInstance | None = None,
    ) -> None:
        self.engine = engine
        self.rec = record
        self.epoch = epoch
        self.definition = definition
        self.plan = plans.plan_for(definition)
        # a fresh instance has no step rows yet: no need to read them
        self.state = load_state(None if fresh else engine.repo, record, self.plan)
        self.advanced = False
        self.paused = False
        self.inflight: dict[str, asyncio.Task[Outcome]] = {}
        self.emitted: dict[str, list[tuple[str, Any]]] = {}
        self.stop = stop  # a worker's graceful stop: finish the step in flight, start no other
        self.last_beat: datetime | None = engine.clock.now()  # the claim itself set the lease
        self.stored_status, self.stored_wake = record.status, record.wake_at  # as last committed
        self.written: dict[str, Any] = {}  # the instance columns of the last commit
        self.lost = False
        self.aborted = False  # the instance was taken from this runner (see ``abort``)
        self.birth = birth  # not inserted yet: the first commit inserts it
        self.refusing: set[str] = set()  # steps whose refused result is being failed instead

    @property
    def now(self) -> datetime:
        return self.engine.clock.now()

    # -- committing --------------------------------------------------------------------
    async def apply(
        self,
        event: interp.Event,
        consume: list[int] | None = None,
        emitted: list[tuple[str, Any]] | None = None,
    ) -> interp.Decision:
        """Decide, then commit; ``emitted`` are the handler's ``ctx.emit`` events and ``ctx.log``
        lines (history type, data), recorded with it."""
        decision = self.decide(event, emitted)
        if (
            not decision.history
            and not decision.changed
            and decision.state.status == self.state.status
        ):
            self.state = decision.state
            return decision
        try:
            try:
                await self.commit(decision, consume or [], abort_if_paused=not self.paused)
            except repo.InstancePaused:
                # paused while the handler ran: record its result, but let no new step start
                self.paused = True
                self.state.status = "paused"
                decision = self.decide(event, emitted)
                await self.commit(decision, consume or [])
        except errors.StoreRefused as exc:
            return await self.refused(event, exc, consume or [])
        return decision

    async def refused(
        self, event: interp.Event, exc: errors.StoreRefused, consume: list[int]
    ) -> interp.Decision:
        """The database refused this transition's data, and would refuse it again: a step's
        result fails that step at once, with no retry (its handler never runs again for it);
        anything else, or a failure the database refuses too, fails the instance. Should even
        that be refused, ``StoreRefused`` leaves the run, which backs off (``worker.drive``)."""
        _log.error("instance %s: the database refused a transition", self.rec.id, exc_info=exc)
        # the driver's message may quote the whole row: keep the start, and only printable text
        error = jsondata.printable_error({"type": type(exc).__name__, "message": str(exc)[:2000]})
        if (
            isinstance(event, interp.StepSucceeded | interp.StepFailed)
            and event.path not in self.refusing
        ):
            self.refusing.add(event.path)  # its failure refused too: the instance fails
            try:
                return await self.apply(interp.StepFailed(event.path, error, False), consume)
            finally:
                self.refusing.discard(event.path)
        await self.fail_instance(exc)
        return interp.Decision(self.state)

    def decide(self, event: interp.Event, emitted: list[tuple[str, Any]] | None) -> interp.Decision:
        decision = interp.decide(self.plan, self.state, event, self.now, self.rec.id)
        if emitted and isinstance(event, interp.StepSucceeded | interp.StepFailed):
            custom = [interp.HistoryItem(name, event.path, data) for name, data in emitted]
            decision.history[:0] = custom  # in history and to subscribers, once the step commits
        return decision

    async def commit(
        self, decision: interp.Decision, consume: list[int], *, abort_if_paused: bool = False
    ) -> None:
        now = self.now
        s = decision.state
        work = decision.runnable(self.plan) or decision.children()
        terminal = s.status in TERMINAL
        wake = None if terminal else (now if work or s.deferred else interp.next_wake(s))
        # the commit extends the lease: a runner that commits often never heartbeats
        until = None if terminal else now + timedelta(seconds=self.engine.settings.lease)
        values: dict[str, Any] = {
            "status": s.status,
            "state": s.frontier_json(),
            "current_step": s.active[-1] if s.active else None,
            "output": s.output,
            "error": s.error,
            "wake_at": wake,
            "started_at": s.started_at,
            "completed_at": s.completed_at,
            "updated_at": now,
            "lease_expires_at": until,
        }
        steps = step_writes(s, decision.changed)
        history = [repo.HistoryWrite(h.type, h.step, h.data, now) for h in decision.history]
        # the parent learns in the same commit, or not at all
        notify = child_notice(self.rec, s.status, s.output, s.error) if terminal else []
        stored = set()
        if s.status == self.stored_status:
            stored.add("status")
        if wake is not None and self.stored_wake is not None and self.stored_wake <= wake <= now:
            stored.add("wake_at")  # due already: rewriting "due now" would only churn the index
        t = repo.Transition(
            self.rec.id, self.epoch, values, steps, history, consume, notify,
            abort_if_paused=abort_if_paused, stored=frozenset(stored), create=self.birth,
        )  # fmt: skip
        status = await self.write(t)
        if self.birth is not None:
            self.birth = None
            self.engine.announce(self.rec)
        self.stored_status = status
        self.last_beat = now
        self.written = values
        if "wake_at" not in stored:
            self.stored_wake = wake
        self.state = s
        self.advanced = True
        if status == "paused" and not terminal:
            self.paused = True
            self.state.status = "paused"
        for h in decision.history:
            self.engine.publish(self.rec, h.type, h.step, h.data)
            if h.type in REPORTED and self.stop is not None:  # a worker loop's run, not execute()
                report(self.rec, h)
        if terminal:
            self.engine.finished(self.rec.id, self.definition)

    async def write(self, t: repo.Transition) -> str:
        """Commit ``t``; in a worker, while the database is unreachable, again with backoff
        until it is back (a fenced write: once another worker took the instance over,
        ``LeaseLost`` ends it). A commit whose outcome is unknown is not written again
        (``CommitUnknown`` ends the run; the worker claims the instance again)."""
        store = self.engine.repo
        backoff = outage.Backoff(self.engine.outage, f"a commit of instance {self.rec.id}")
        while True:
            try:
                if self.engine.active_runners > 1 and store.runner_shaped(t):
                    # others are in flight: share their commit (one fsync for all), off the loop
                    status = await store.committer.submit(t)
                else:
                    status = store.commit_transition(t)
            except committer.CommitUnknown:
                raise
            except Exception as exc:
                if self.stop is None or not outage.transient(exc):  # not a worker's: the caller's
                    raise
                await asyncio.sleep(backoff.failed(exc))
                continue
            backoff.ok()
            return status

    def snapshot(self) -> records.WorkflowInstance | None:
        """The instance as its final commit left it, without reading it back; None unless this
        runner ended it cleanly (a map's plain-path rows are only in the database)."""
        s, rec = self.state, self.rec
        if (
            self.lost
            or s.status not in TERMINAL
            or self.stored_status != s.status
            or self.plan.in_maps
        ):
            return None
        steps = sorted(
            (st for st in s.steps.values() if not is_item_result(st.path)),
            key=lambda st: self.plan.order_key(st.path, st.started_at, st.completed_at),
        )
        return records.WorkflowInstance.model_construct(  # our own state: no need to validate
            id=rec.id, workflow_name=rec.workflow_name, workflow_version=rec.workflow_version,
            definition_hash=rec.definition_hash, status=InstanceStatus(s.status),
            current_step=self.written.get("current_step"), input=rec.input, output=s.output,
            error=s.error, step_results={st.path: st.record() for st in steps},
            metadata=dict(s.metadata), parent_id=rec.parent_id, created_at=rec.created_at,
            started_at=s.started_at, completed_at=s.completed_at, wake_at=None,
        )  # fmt: skip

    @staticmethod
    def _step_write(s: State, path: str) -> repo.StepWrite:
        st = s.steps[path]
        return repo.StepWrite(
            path=path,
            status=st.status,
            input=st.input,
            output=st.output,
            # a skipped step has no error: its row keeps why it was skipped there instead
            # (``repository._step`` reads it back as the step's ``reason``)
            error=st.reason if st.status == "skipped" else st.error,
            attempts=st.attempts,
            iteration=st.iteration,
            started_at=st.started_at,
            completed_at=st.completed_at,
            next_attempt_at=st.wake_at,
        )

    # -- running -----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.state.status == "pending":
                await self.apply(interp.Start())
            await self.deliver_events()
            await self.apply(interp.Tick())
            await self.loop()
        except errors.LeaseLost:
            self.lost = True
            _log.info("lease on %s lost; another worker owns it now", self.rec.id)
            for task in self.inflight.values():
                task.cancel()
        except errors.ExpressionError as exc:
            await self.fail_instance(exc)
        except errors.StoreError:
            for task in self.inflight.values():  # nobody would record their results
                task.cancel()
            raise

    async def fail_instance(self, exc: BaseException) -> None:
        """A flow rule could not be evaluated (e.g. a condition raised): the instance fails cleanly."""
        s = self.state
        error = {"type": type(exc).__name__, "message": str(exc)}
        decision = interp.decide(self.plan, s, interp.Cancel("failed"), self.now, self.rec.id)
        decision.state.status = "failed"
        decision.state.error = error
        decision.history = [h for h in decision.history if h.type != "workflow.cancelled"]
        decision.history.append(interp.HistoryItem("workflow.failed", None, {"error": error}))
        await self.commit(decision, [])

    async def start_children(self) -> bool:
        """Start (idempotently) the child of every subworkflow step that has none yet."""
        paths = interp.Decision(self.state).children()
        for path in paths:
            st = self.state.steps[path]
            step = self.plan.node(path).step
            assert isinstance(step, models.SubworkflowStep)
            cid = interp.child_id(self.rec.id, path, st.iteration)
            child = self.engine.repo.get(cid)
            if child is None:
                try:
                    self.engine.start(step.workflow, st.input, cid, parent_id=self.rec.id)
                except (
                    errors.StatemachineError
                ) as exc:  # unknown workflow, input failing its schema
                    error = {"type": type(exc).__name__, "message": str(exc)}
                    await self.apply(interp.ChildFinished(path, "failed", None, error))
                    continue
                await self.apply(interp.ChildStarted(path))
                from statemachine import worker  # the worker module imports this one

                await worker.drive(self.engine, cid)  # run it here now; any worker could, later
                continue
            elif (
                child.status == "failed"
                and child.completed_at
                and st.started_at
                and child.completed_at < st.started_at
            ):
                self.engine.retry(cid)  # the parent is being retried: so is its failed child
            elif child.status in TERMINAL:
                await self.apply(
                    interp.ChildFinished(path, child.status, child.output, child.error)
                )
                continue
            await self.apply(interp.ChildStarted(path))
        return bool(paths)

    async def deliver_events(self) -> None:
        phases = {self.state.steps[p].phase for p in self.state.active if p in self.state.steps}
        if not phases & {"event", "child-wait", "child"}:
            return
        children = {
            interp.child_id(self.rec.id, p, self.state.steps[p].iteration): p
            for p in self.state.active
            if p in self.state.steps and self.state.steps[p].phase in ("child", "child-wait")
        }
        for ev in self.engine.repo.pending_events(self.rec.id):
            if ev.name.startswith("child:"):
                path = children.get(ev.name[len("child:") :])
                if path is not None and isinstance(ev.data, dict):
                    finished = interp.ChildFinished(
                        path,
                        str(ev.data.get("status")),
                        ev.data.get("output"),
                        ev.data.get("error"),
                    )
                    await self.apply(finished, consume=[ev.id])
                continue
            waiting = [
                p
                for p in self.state.active
                if self.state.steps[p].phase == "event" and self.state.steps[p].event == ev.name
            ]
            if waiting:
                await self.apply(interp.EventArrived(ev.name, ev.data), consume=[ev.id])

    async def loop(self) -> None:
        settings = self.engine.settings
        stalled = 0
        # a pause stops new steps; the ones in flight still finish and are recorded
        while self.state.status in ACTIVE or (self.paused and self.inflight):
            self.check_aborted()
            # an event may have waited in the inbox for a wait that just began
            await self.deliver_events()
            holding = self.paused or self.stopping()  # no new step starts; in-flight ones finish
            if not holding and await self.start_children():
                continue  # a child that ran here may already have finished: deliver its event
            if self.state.status not in ACTIVE and not self.inflight:
                break
            if not holding:
                runnable = interp.Decision(self.state).runnable(self.plan)
                if await self.run_inline(runnable):
                    self.heartbeat()  # a long run of inline steps must keep its lease too
                    await self.settled()
                    continue
                for path in runnable:
                    if path not in self.inflight:
                        self.inflight[path] = asyncio.ensure_future(self.execute(path))
            if not self.inflight:
                wake = interp.next_wake(self.state)
                if holding or wake is None:
                    return
                delay = (wake - self.now).total_seconds()
                if delay > settings.inline_wait or not self.engine.clock.real:
                    if delay <= 0 and stalled < 3:
                        stalled += 1  # a due timer the tick cannot fire must not spin forever
                        await self.apply(interp.Tick())
                        continue
                    return
                await self.engine.clock.sleep(delay)
                self.heartbeat(force=True)
                await self.apply(interp.Tick())
                continue
            done, _ = await asyncio.wait(
                self.inflight.values(),
                timeout=self.wait_limit(settings.lease / 3),
                return_when=asyncio.FIRST_COMPLETED,
            )
            self.check_aborted()  # its handlers were cancelled: there is nothing to record
            for path, task in list(self.inflight.items()):
                if task in done:
                    del self.inflight[path]
                    await self.record(path, task.result())
            self.heartbeat()  # a no-op after a commit, which extended the lease
            await self.settled()
        for task in self.inflight.values():
            task.cancel()

    def wait_limit(self, beat: float) -> float:
        """How long to wait for handlers: until the next heartbeat, or the workflow's deadline
        if that comes first (``settled`` then times the instance out, whatever still runs)."""
        deadline = self.state.deadline
        if deadline is None or self.state.status == "compensating":
            return beat  # undoing may outlive the deadline
        return max(0.0, min(beat, (deadline - self.now).total_seconds()))

    def abort(self) -> None:
        """The instance was taken from this runner (a cancel made in this process): cancel its
        async handlers and abandon its sync ones now, not at the next heartbeat. Loop thread."""
        self.aborted = True
        for task in self.inflight.values():
            task.cancel()

    def check_aborted(self) -> None:
        if self.aborted:
            raise errors.LeaseLost(f"instance {self.rec.id} was taken from this runner")

    def note_late(self, path: str, attempt: int, outcome: Outcome) -> None:
        """An abandoned sync call ended (pool thread): its result is discarded, and history says so."""
        now = self.now
        data: dict[str, Any] = {"attempt": attempt, "ok": outcome.ok, "discarded": True}
        if outcome.error is not None:
            data["error"] = {k: outcome.error[k] for k in ("type", "message")}
        note = repo.HistoryWrite("workflow.step.late_result", path, data, now)
        t = repo.Transition(self.rec.id, None, {"updated_at": now}, history=[note])
        store = self.engine.repo
        try:  # on the committer's thread, which refuses work once the store is closed; waited
            # for, so the step's next attempt (which waits for this call) comes after the note
            job = store.committer.call(functools.partial(store.commit_transition, t))
            job.result(timeout=self.engine.settings.lease)
        except (errors.StoreError, TimeoutError):  # closed, or stuck: the result is discarded
            _log.debug("could not note the late result of %s in %s", path, self.rec.id)

    async def record(self, path: str, outcome: Outcome) -> None:
        emitted = self.emitted.pop(path, [])
        if outcome.ok:
            await self.apply(interp.StepSucceeded(path, outcome.output), emitted=emitted)
        else:
            failed = interp.StepFailed(path, outcome.error or {}, outcome.retryable)
            await self.apply(failed, emitted=emitted)

    async def settled(self) -> None:
        """After results were recorded: events that arrived, a deadline passed, losers cancelled."""
        await self.deliver_events()
        if self.state.deadline is not None and self.now >= self.state.deadline:
            await self.apply(interp.Tick())
        self.cancel_abandoned()

    async def run_inline(self, runnable: list[str]) -> bool:
        """Run the one runnable step here on the loop, skipping the thread hop, when no other
        step of this instance is in flight and its action is sync, has no timeout and has
        been quick every time so far (see ``Executor.can_inline``). Other instances on the
        loop wait for it, a few milliseconds at most unless it blocks for the first time; it
        then returns to the pool for good, and ``leases.LeaseKeeper`` holds every lease of
        this engine while the loop is stalled."""
        if len(runnable) != 1 or self.inflight:
            return False
        path = runnable[0]
        call = self.prepare(path)
        executor = self.engine.executor
        if not executor.can_inline(call.fn, call.step, call.ctx):
            return False
        outcome = executor.run_inline(
            call.fn, call.step, call.payload, call.ctx, call.policy, compensation=call.compensation
        )
        await self.record(path, outcome)
        return True

    def cancel_abandoned(self) -> None:
        """Cancel handlers whose step no longer waits for them (a lost race, a fail-fast sibling)."""
        for path, task in list(self.inflight.items()):
            st = self.state.steps.get(path)
            if st is None or st.status != "running" or path not in self.state.active:
                task.cancel()
                del self.inflight[path]

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def set_metadata(self, key: str, value: Any) -> None:
        """Persisted at once (outside the step's transition) and visible to later steps here."""
        self.engine.set_metadata_key(self.rec.id, key, value)
        self.state.metadata[key] = value

    def heartbeat(self, force: bool = False) -> None:
        """Extend the lease, at most every third of it: a heartbeat per step would double the commits."""
        now = self.now
        if (
            not force
            and self.last_beat is not None
            and (now - self.last_beat).total_seconds() < self.engine.settings.lease / 3
        ):
            return
        self.last_beat = now
        until = now + timedelta(seconds=self.engine.settings.lease)
        try:
            kept = self.engine.repo.heartbeat(self.rec.id, self.epoch, now, until)
        except Exception as exc:  # the next beat tries again; fencing guards a lapsed lease
            if not outage.transient(exc):
                raise
            self.engine.outage.failed(f"the heartbeat of instance {self.rec.id}", exc)
            return
        self.engine.outage.ok()
        if not kept:
            raise errors.LeaseLost(f"instance {self.rec.id} was taken over")

    async def execute(self, path: str) -> Outcome:
        call = self.prepare(path)
        late = functools.partial(self.note_late, path, call.ctx.attempt)
        return await self.engine.executor.run(
            call.fn, call.step, call.payload, call.ctx, call.policy,
            compensation=call.compensation, late=late,
        )  # fmt: skip

    def prepare(self, path: str) -> Call:
        st = self.state.steps[path]
        compensation = saga.is_compensation(path)
        step = self.plan.node(saga.base_path(path)).step
        assert isinstance(step, models.TaskStep | models.PollStep)
        if compensation:
            assert isinstance(step, models.TaskStep) and step.compensate is not None
            target: Any = step.compensate
        else:
            target = step.handler if isinstance(step, models.TaskStep) else step.check
        fn: Callable[..., Any] = self.engine.resolve_action(target)
        view = flowctx.view(self.plan, self.state, path, st.prev, self.rec.id)
        key = f"{self.rec.id}/{path}/{st.iteration}"
        ctx = StepContext(
            view,
            attempt=st.attempts,
            idempotency_key=key,
            set_metadata=self.set_metadata,
            emit=lambda name, data: self.emitted.setdefault(path, []).append(
                (name, {"data": data})
            ),
            record_log=lambda data: self.emitted.setdefault(path, []).append((LOG_ENTRY, data)),
        )
        policy = flowctx.retry_policy(self.definition, step)
        return Call(fn, step, st.input, ctx, policy, compensation)


def report(rec: repo.InstanceRecord, item: interp.HistoryItem) -> None:
    """A step failure, retry, or instance failure, as one log line once it is committed."""
    error = item.data.get("error")
    if not isinstance(error, dict):
        error = {}
    what = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    where = f"instance {rec.id} ({rec.workflow_name})"
    if item.type == "workflow.step.retry":
        text = f"{where}: step {item.step} failed (attempt {item.data.get('attempt')}), retrying"
        text += f" in {item.data.get('delay', 0):g}s: {what}"
    elif item.type == "workflow.step.failed":
        text = f"{where}: step {item.step} failed (attempt {item.data.get('attempt')}): {what}"
    elif item.type == "workflow.timed_out":
        text = f"{where} timed out: {error.get('message', '')}"
    else:
        step = f" at step {error['step']}" if error.get("step") else ""
        text = f"{where} failed{step}: {what}"
    extra = {"instance_id": rec.id, "workflow": rec.workflow_name, "step": item.step}
    _reports.log(REPORTED[item.type], text, extra={**extra, "event": item.type})


@dataclass(frozen=True)
class Call:
    """One handler call, ready to run: in the pool, natively (async), or inline."""

    fn: Callable[..., Any]
    step: models.TaskStep | models.PollStep
    payload: Any
    ctx: StepContext
    policy: models.RetryPolicy | None
    compensation: bool
