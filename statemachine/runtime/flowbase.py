"""One decision in the making: the state it changes, what it records, and the operations of flow.

``FlowBase`` holds what every flow rule shares (the plan, the state being changed, the decision
being built, the work queue) and the primitive operations on them. The flow rules themselves are
mixins, one module each: the step machine (``steps``), scopes with several steps at once
(``scopes``), time (``timers``), compensation (``saga``), subworkflows (``subworkflows``) and the
instance's own transitions (``lifecycle``). A rule of one mixin calls a rule of another through
the abstract operations declared here, so no mixin imports another and ``interpreter`` only
assembles them into ``FlowRun``.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from statemachine.definition import models
from statemachine.runtime import flowview
from statemachine.runtime.paths import ancestors
from statemachine.runtime.plan import Node, Plan, Scope
from statemachine.runtime.state import FINISHED, State, StepState
from statemachine.runtime.transitions import Decision, HistoryItem
from statemachine.vocabulary import TERMINAL, InstanceStatus, Phase, StepStatus

#: what the work queue holds: ``(kind, path, prev)``; kinds are ``enter`` and ``consider``
#: (``FlowBase.drain``) and the saga's ``redo`` and ``resume``
Work = tuple[str, str, str | None]
ENTER = "enter"
CONSIDER = "consider"
_UNFINISHED = frozenset({StepStatus.RUNNING, StepStatus.WAITING, StepStatus.PENDING})


class FlowBase(abc.ABC):
    """The shared attributes and primitive operations of a decision (see the module docstring)."""

    def __init__(self, plan: Plan, state: State, now: datetime, instance_id: str) -> None:
        self.plan = plan
        self.definition = plan.definition
        self.state = state  # a clone: the decision changes it freely
        self.now = now
        self.instance_id = instance_id
        self.decision = Decision(state)
        self.queue: deque[Work] = deque()
        self.entered = 0  # steps entered so far (``steps.MAX_ENTERS_PER_DECISION``)

    # -- bookkeeping --------------------------------------------------------------------
    def log(self, type_: str, step: str | None = None, **data: Any) -> None:
        self.decision.history.append(HistoryItem(type_, step, data))

    def touch(self, st: StepState) -> None:
        """``st`` changed: its row is written with the decision."""
        self.decision.changed.add(st.path)

    def activate(self, path: str) -> None:
        if path not in self.state.active:
            self.state.active.append(path)

    def deactivate(self, path: str) -> None:
        if path in self.state.active:
            self.state.active.remove(path)

    def view(self, path: str, prev: str | None) -> flowview.FlowView:
        return flowview.view(self.plan, self.state, path, prev, self.instance_id)

    @property
    def terminal(self) -> bool:
        return self.state.status in TERMINAL

    def alive(self, path: str) -> bool:
        """Whether a step at ``path`` may still start: the instance and every enclosing branch run."""
        if self.terminal:
            return False
        for container, branch in ancestors(path):
            parent = self.state.peek(container)
            if parent is None or parent.status != StepStatus.RUNNING:
                return False
            result = self.state.branches.get(container, {}).get(branch)
            if result is None or result.get("status") != StepStatus.RUNNING:
                return False
        return True

    def scope_alive(self, scope: Scope) -> bool:
        return self.alive(scope.prefix + (scope.steps[0].name if scope.steps else "_"))

    # -- the work queue ----------------------------------------------------------------
    def schedule_enter(self, path: str, prev: str | None) -> None:
        self.queue.append((ENTER, path, prev))

    def schedule_consider(self, path: str) -> None:
        if (CONSIDER, path, None) not in self.queue:
            self.queue.append((CONSIDER, path, None))

    def queued_in(self, scope: Scope) -> bool:
        return any(self.plan.node(path).scope is scope for _, path, _ in self.queue)

    # -- step records ------------------------------------------------------------------
    def fresh(self, path: str, prev: str | None, **fields: Any) -> StepState:
        """A new record for ``path`` in place of any earlier one: a step entered again (loop,
        choice) counts one more iteration; one reset to pending (retry, DAG restart) keeps its."""
        old = self.state.peek(path)
        iteration = 0 if old is None else old.iteration + (old.status != StepStatus.PENDING)
        if old is not None and old.status == StepStatus.COMPLETED:
            self.state.latest[path] = old.output  # seen by the body of a loop until replaced
        st = self.state.put(StepState(path=path, prev=prev, iteration=iteration, **fields))
        self.touch(st)
        return st

    def new_state(self, path: str, prev: str | None) -> StepState:
        """A fresh attempt record, started now."""
        st = self.fresh(path, prev, started_at=self.now)
        self.activate(path)
        self.log("workflow.step.started", path, iteration=st.iteration)
        return st

    def cancel_step(self, path: str, reason: str) -> None:
        st = self.state.step(path)
        if st.status in _UNFINISHED:
            st.status, st.phase, st.wake_at = StepStatus.CANCELLED, Phase.NONE, None
            st.completed_at = self.now
            self.touch(st)
            self.log("workflow.step.cancelled", path, reason=reason)
        self.deactivate(path)

    def cancel_under(self, prefix: str, reason: str) -> None:
        for path in [p for p in self.state.active if p.startswith(prefix)]:
            self.cancel_step(path, reason)

    def cancel_active(self, reason: str) -> None:
        for path in list(self.state.active):
            self.cancel_step(path, reason)

    # -- the instance --------------------------------------------------------------------
    def finish_workflow(
        self,
        status: InstanceStatus,
        *,
        output: Any = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        state = self.state
        state.status = status
        state.output, state.error = output, None if error is None else dict(error)
        state.completed_at = self.now
        if status == InstanceStatus.COMPLETED and not any(
            h.type == "workflow.progress" and h.data.get("progress") == 100
            for h in self.decision.history
        ):
            self.log("workflow.progress", None, progress=100)
        data: dict[str, Any] = (
            {"output": output} if status == InstanceStatus.COMPLETED else {"error": state.error}
        )
        self.log(f"workflow.{status}", None, **data)

    def progress(self) -> int:
        """Finished top-level steps, in percent: the memo of the state this decision started
        from (its clone holds it unchanged until ``remember``), corrected by the steps this
        decision changed."""
        known = self.state.finished_top
        if known is None:
            done = len(self.finished_top())
        else:
            done = len(known)
            for path in self.decision.changed & self.plan.top_level:
                st = self.state.peek(path)
                done += (st is not None and st.status in FINISHED) - (path in known)
        return min(100, round(100 * done / max(1, self.plan.top_level_count)))

    def finished_top(self) -> frozenset[str]:
        return frozenset(
            name
            for name in self.plan.top_level
            if (st := self.state.peek(name)) is not None and st.status in FINISHED
        )

    # -- the step machine (``steps``) ------------------------------------------------------
    @abc.abstractmethod
    def drain(self) -> None:
        """Run the queued work: enter steps, consider DAG steps."""

    @abc.abstractmethod
    def enter(self, path: str, prev: str | None) -> None:
        """Enter the step at ``path`` (its condition first), led there by ``prev``."""

    @abc.abstractmethod
    def begin(self, st: StepState, node: Node) -> None:
        """Do what the step's kind does, now that it is due (its delay passed)."""

    @abc.abstractmethod
    def run_task(
        self, st: StepState, step: models.TaskStep | models.PollStep, payload: Any
    ) -> None:
        """Leave the handler (or poll check) of ``st`` to run now, with ``payload``."""

    @abc.abstractmethod
    def succeed(self, st: StepState, output: Any, goto: str | None = None) -> None:
        """``st`` completed with ``output``; the flow goes on (to ``goto`` if given)."""

    @abc.abstractmethod
    def fail(self, st: StepState, error: Mapping[str, Any], *, retry: bool = True) -> None:
        """``st`` failed: retried if its policy allows, else its ``on_error`` applies."""

    @abc.abstractmethod
    def skip(self, path: str, prev: str | None, reason: dict[str, Any]) -> None:
        """Skip ``path`` for ``reason`` and go on."""

    # -- scopes (``scopes``) --------------------------------------------------------------
    @abc.abstractmethod
    def start_scope(self, scope: Scope, prev: str | None) -> None:
        """Start a scope: its first step, or every DAG root."""

    @abc.abstractmethod
    def start_branches(self, parent: StepState, step: models.ParallelStep) -> None:
        """Start the branches of a parallel step not started yet."""

    @abc.abstractmethod
    def next_item(self, parent: StepState, step: models.MapStep) -> None:
        """Start the next items of a map; complete it when every item is done."""

    @abc.abstractmethod
    def maybe_join(self, parent: StepState, step: models.ParallelStep) -> None:
        """End a parallel step whose branches are all done."""

    @abc.abstractmethod
    def consider(self, path: str) -> None:
        """Run, skip or leave waiting a DAG step, as its trigger rule says."""

    @abc.abstractmethod
    def maybe_finish_dag(self, scope: Scope) -> None:
        """End a DAG scope when nothing more can run in it."""

    @abc.abstractmethod
    def scope_done(self, scope: Scope, output: Any) -> None:
        """A scope finished with ``output``: its container (or the instance) goes on."""

    @abc.abstractmethod
    def scope_failed(self, scope: Scope, error: Mapping[str, Any]) -> None:
        """A scope failed with ``error``: its container (or the instance) fails."""

    # -- time (``timers``) ----------------------------------------------------------------
    @abc.abstractmethod
    def begin_wait(self, st: StepState, step: models.WaitStep, until: Any) -> None:
        """Start waiting: for an event, a duration, or until a time."""

    @abc.abstractmethod
    def loop(self, st: StepState, node: Node, view: flowview.FlowView, holds: bool) -> None:
        """A loop step whose condition was evaluated to ``holds``."""

    @abc.abstractmethod
    def end_loop(self, path: str, node: Node) -> None:
        """Forget a loop's counters: it ended."""

    # -- compensation (``saga``) ----------------------------------------------------------
    @abc.abstractmethod
    def fail_workflow(self, error: Mapping[str, Any]) -> None:
        """Fail the instance, after undoing what declared ``compensate``."""

    @abc.abstractmethod
    def note_completed(self, st: StepState) -> None:
        """Remember an undoable step's completion, for compensation."""

    @abc.abstractmethod
    def compensation_done(
        self, st: StepState, output: Any, error: Mapping[str, Any] | None, retry: bool
    ) -> None:
        """A compensation handler returned or raised."""

    @abc.abstractmethod
    def redo_compensated(self) -> bool:
        """Queue the first step compensation undid to run again; False if none was undone."""

    @abc.abstractmethod
    def redo_work(self, kind: str, path: str) -> None:
        """Queued work of a retry after compensation."""

    @abc.abstractmethod
    def redone(self, st: StepState) -> bool:
        """True if ``st`` completed as a step redone by a retry (the flow resumes elsewhere)."""

    @abc.abstractmethod
    def redo_failed(self, st: StepState, error: Mapping[str, Any]) -> bool:
        """True if ``st`` failed as a step redone by a retry (the instance fails again)."""

    # -- the instance (``lifecycle``) -----------------------------------------------------
    @abc.abstractmethod
    def resume_failed(self) -> None:
        """Continue from every failed and cancelled step a retry can resume."""
