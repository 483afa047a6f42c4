"""A runner's handler calls: ready one (``prepare``), run it in the pool, natively or inline,
and feed its outcome back (``record``); a call abandoned in the pool notes its late result.

A part of ``InstanceRunner`` (runner.py); the fields it reads are declared in runner_core.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statemachine import errors
from statemachine.definition import models
from statemachine.engine import inputs, limits
from statemachine.engine.runner_core import RunnerCore
from statemachine.runtime import flowview, paths, retries
from statemachine.runtime import interpreter as interp
from statemachine.runtime.context import LOG_ENTRY, StepContext
from statemachine.runtime.outcome import Outcome
from statemachine.store import repository as repo

_log = logging.getLogger("statemachine.runner")


class StepCalls(RunnerCore):
    def note_late(self, path: str, attempt: int, outcome: Outcome) -> None:
        """An abandoned sync call ended (pool thread): its result is discarded, and history says so."""
        now = self.now
        data: dict[str, Any] = {"attempt": attempt, "ok": outcome.ok, "discarded": True}
        if outcome.error is not None:
            data["error"] = {k: outcome.error[k] for k in ("type", "message")}
        note = repo.HistoryWrite("workflow.step.late_result", path, data, now)
        t = repo.Transition(self.rec.id, None, repo.Columns(updated_at=now), history=[note])
        store = self.services.repo
        try:  # by the committer's thread, which refuses work once the store is closed; waited
            # for, so the step's next attempt (which waits for this call) comes after the note
            store.queue(t).result(timeout=self.services.settings.lease)
        except (errors.StoreError, TimeoutError):  # closed, or stuck: the result is discarded
            _log.debug("could not note the late result of %s in %s", path, self.rec.id)

    async def record(self, path: str, outcome: Outcome) -> None:
        emitted = self.emitted.pop(path, [])
        until = self.deferrals.pop(path, None)
        if until is not None:  # over its action's limit: the handler did not run
            await self.apply(interp.StepDeferred(path, until))
            return
        if outcome.ok:
            await self.apply(interp.StepSucceeded(path, outcome.output), emitted=emitted)
        else:
            failed = interp.StepFailed(path, outcome.error or {}, outcome.retryable)
            await self.apply(failed, emitted=emitted)

    async def run_inline(self, runnable: list[str]) -> bool:
        """Run the one runnable step on the loop's thread, skipping the thread hop, when no other
        step of this instance is in flight and its action is sync, has no timeout and has
        been quick every time so far (see ``Executor.can_inline``). Other instances on the
        loop wait for it, a few milliseconds at most unless it blocks for the first time; it
        then returns to the pool for good, and ``leases.LeaseKeeper`` holds every lease of
        this engine while the loop is stalled."""
        if len(runnable) != 1 or self.inflight:
            return False
        path = runnable[0]
        if self.limited(path) is not None:
            return False  # admitted in the pool, right before the call (``execute``)
        call = self.prepare(path)
        executor = self.services.executor
        if not executor.can_inline(call.fn, call.step, call.ctx):
            return False
        outcome = await executor.run_inline(
            call.fn, call.step, call.payload, call.ctx, call.policy, compensation=call.compensation
        )
        await self.record(path, outcome)
        return True

    def set_metadata(self, key: str, value: Any) -> None:
        """Persisted at once (outside the step's transition) and visible to later steps here."""
        inputs.set_metadata_key(self.services, self.rec.id, key, value)
        self.state.metadata[key] = value

    async def execute(self, path: str) -> Outcome:
        call = self.prepare(path)
        late = functools.partial(self.note_late, path, call.ctx.attempt)
        action, fn = self.limited(path), call.fn
        if action is not None:
            fn = limits.gated(fn, self.gate(path, action))
        try:
            return await self.services.executor.run(
                fn, call.step, call.payload, call.ctx, call.policy,
                compensation=call.compensation, late=late,
            )  # fmt: skip
        finally:
            await self.end_call(path)

    def prepare(self, path: str) -> Call:
        st = self.state.steps[path]
        compensation = paths.is_compensation(path)
        step = self.plan.node(paths.base_path(path)).step
        assert isinstance(step, models.TaskStep | models.PollStep)
        if compensation:
            assert isinstance(step, models.TaskStep) and step.compensate is not None
            target: Any = step.compensate
        else:
            target = step.handler if isinstance(step, models.TaskStep) else step.check
        fn: Callable[..., Any] = self.services.registry.resolve_action(target)
        view = flowview.view(self.plan, self.state, path, st.prev, self.rec.id)
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
        policy = retries.policy_of(self.definition, step)
        return Call(fn, step, st.input, ctx, policy, compensation)

    def action_of(self, path: str) -> str | None:
        """The registered name of the action a step (or its compensation) calls; None for a
        function given inline (no name to limit it by). A compensation calls an action like
        any step, so that action's limit holds for it too."""
        step = self.plan.node(paths.base_path(path)).step
        if paths.is_compensation(path):
            target = step.compensate if isinstance(step, models.TaskStep) else None
        elif isinstance(step, models.TaskStep):
            target = step.handler
        else:
            target = getattr(step, "check", None)
        return target if isinstance(target, str) else None

    def limited(self, path: str) -> str | None:
        """The step's action if it has a limit (``limit_action``), else None."""
        action = self.action_of(path)
        return action if action is not None and limits.limited(self.services, action) else None

    def gate(self, path: str, action: str) -> Callable[[], bool]:
        """Admits the call of ``path`` (counting it against the action's limit), or notes
        when to try again for ``record``, which then defers the step with no attempt used.
        Called where the handler runs, right before it (``limits.gated``)."""
        args = (self.services, action, self.rec.id, path, self.epoch)

        def admitted() -> bool:
            until = limits.admit(*args)
            if until is None:
                self.calls[path] = action
                return True
            self.deferrals[path] = until
            return False

        return admitted

    async def end_call(self, path: str) -> None:
        """The handler returned: a concurrency slot it held is free for the next call."""
        action = self.calls.pop(path, None)
        if action is not None:
            store = self.services.repo
            await asyncio.to_thread(store.end_call, action, self.rec.id, path, self.epoch)

    def cancel_abandoned(self) -> None:
        """Cancel handlers whose step no longer waits for them (a lost race, a fail-fast sibling)."""
        for path, task in list(self.inflight.items()):
            st = self.state.steps.get(path)
            if st is None or st.status != "running" or path not in self.state.active:
                task.cancel()
                del self.inflight[path]


@dataclass(frozen=True)
class Call:
    """One handler call, ready to run: in the pool, natively (async), or inline."""

    fn: Callable[..., Any]
    step: models.TaskStep | models.PollStep
    payload: Any
    ctx: StepContext
    policy: models.RetryPolicy | None
    compensation: bool
