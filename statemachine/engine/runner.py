"""Drives one claimed instance: decide, commit, run handlers, repeat, until it waits or ends.

Every transition is one fenced commit (step rows + instance state + history); a handler runs
outside any transaction and its result is committed with the transition it causes. A crash
between the two re-runs the handler with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from statemachine import errors, records
from statemachine.definition import models
from statemachine.engine import outage, queries
from statemachine.engine.calls import StepCalls
from statemachine.engine.children import Inbox
from statemachine.engine.leases import LeaseHolder
from statemachine.engine.reports import REPORTED, report
from statemachine.engine.services import Services
from statemachine.runtime import interpreter as interp
from statemachine.runtime import jsondata
from statemachine.runtime import plan as plans
from statemachine.runtime.outcome import Outcome
from statemachine.runtime.state import TERMINAL, State, is_item_result
from statemachine.store import committer
from statemachine.store import repository as repo
from statemachine.vocabulary import IN_FLIGHT, InstanceStatus

_log = logging.getLogger("statemachine.runner")


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


class InstanceRunner(StepCalls, Inbox, LeaseHolder):
    """One claimed instance in this process; ``run_child`` runs a subworkflow's child here
    (``drive``, which creates runners: passed down, not imported)."""

    def __init__(
        self,
        services: Services,
        record: repo.InstanceRecord,
        epoch: int,
        definition: models.WorkflowDefinition,
        *,
        fresh: bool = False,
        stop: threading.Event | None = None,
        birth: repo.NewInstance | None = None,
        run_child: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.services = services
        self.run_child = run_child
        self.rec = record
        self.epoch = epoch
        self.definition = definition
        self.plan = plans.plan_for(definition)
        # a fresh instance has no step rows yet: no need to read them
        self.state = load_state(None if fresh else services.repo, record, self.plan)
        self.advanced = False
        self.paused = False
        self.inflight: dict[str, asyncio.Task[Outcome]] = {}
        self.emitted: dict[str, list[tuple[str, Any]]] = {}
        self.calls: dict[str, str] = {}  # limited actions running (``StepCalls.gate``)
        self.deferrals: dict[str, datetime] = {}
        self.stop = stop  # a worker's graceful stop: finish the step in flight, start no other
        self.last_beat: datetime | None = services.clock.now()  # the claim itself set the lease
        self.stored_status, self.stored_wake = record.status, record.wake_at  # as last committed
        self.written: dict[str, Any] = {}  # the instance columns of the last commit
        self.lost = False
        self.aborted = False  # the instance was taken from this runner (see ``abort``)
        self.birth = birth  # not inserted yet: the first commit inserts it
        self.event_loop = asyncio.get_running_loop()  # made by ``drive``, on the loop it runs on
        self.refusing: set[str] = set()  # steps whose refused result is being failed instead

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
        that be refused, ``StoreRefused`` leaves the run, which backs off (``drive.drive``)."""
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
        until = None if terminal else now + timedelta(seconds=self.services.settings.lease)
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
        columns = repo.Columns(**values)
        if s.status == self.stored_status:
            columns.status = repo.KEEP  # stored already: left out of the UPDATE
        if wake is not None and self.stored_wake is not None and self.stored_wake <= wake <= now:
            # due already: rewriting "due now" would only churn the index
            columns.wake_at = repo.KEEP
        # a runner that is paused, or ends the instance, writes whatever a pause did meanwhile
        abort_if_paused = abort_if_paused and s.status != "paused" and not terminal
        t = repo.Transition(
            self.rec.id, self.epoch, columns, steps, history, consume, notify,
            abort_if_paused=abort_if_paused, create=self.birth,
        )  # fmt: skip
        status = await self.write(t)
        if self.birth is not None:
            self.birth = None
            self.services.announce(self.rec)
        self.stored_status = status
        self.last_beat = now
        self.written = values
        if columns.wake_at is not repo.KEEP:
            self.stored_wake = wake
        self.state = s
        self.advanced = True
        if status == "paused" and not terminal:
            self.paused = True
            self.state.status = "paused"
        for h in decision.history:
            self.services.publish(self.rec, h.type, h.step, h.data)
            if h.type in REPORTED and self.stop is not None:  # a worker loop's run, not execute()
                report(self.rec, h)
        if terminal:
            queries.finished(self.services, self.rec.id, self.definition)

    async def write(self, t: repo.Transition) -> str:
        """Commit ``t``; in a worker, while the database is unreachable, again with backoff
        until it is back (a fenced write: once another worker took the instance over,
        ``LeaseLost`` ends it). A commit whose outcome is unknown is not written again
        (``CommitUnknown`` ends the run; the worker claims the instance again)."""
        store = self.services.repo
        backoff = outage.Backoff(self.services.outage, f"a commit of instance {self.rec.id}")
        while True:
            try:
                if self.services.local.active_runners > 1:
                    # others are in flight: share their commit (one fsync for all), off the loop
                    status = await store.submit(t)
                else:  # a batch of one, written now
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
            priority=rec.priority, concurrency_key=rec.concurrency_key,
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

    async def loop(self) -> None:
        settings = self.services.settings
        stalled = 0
        # a pause stops new steps; the ones in flight still finish and are recorded
        while self.state.status in IN_FLIGHT or (self.paused and self.inflight):
            self.check_aborted()
            # an event may have waited in the inbox for a wait that just began
            await self.deliver_events()
            holding = self.paused or self.stopping()  # no new step starts; in-flight ones finish
            if not holding and await self.start_children():
                continue  # a child that ran here may already have finished: deliver its event
            if self.state.status not in IN_FLIGHT and not self.inflight:
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
                if delay > settings.inline_wait or not self.services.clock.real:
                    if delay <= 0 and stalled < 3:
                        stalled += 1  # a due timer the tick cannot fire must not spin forever
                        await self.apply(interp.Tick())
                        continue
                    return
                await self.services.clock.sleep(delay)
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

    async def settled(self) -> None:
        """After results were recorded: events that arrived, a deadline passed, losers cancelled."""
        await self.deliver_events()
        if self.state.deadline is not None and self.now >= self.state.deadline:
            await self.apply(interp.Tick())
        self.cancel_abandoned()

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()
