"""The functional core: (definition, state, event, now) -> new state, history, work to do.

No I/O here. Handlers are not run: a task or poll check that must run is left ``running`` in the
state and the executor picks it up (also after a crash, which is how recovery works). Choice and
loop conditions, pass transforms and input mappers are evaluated here: they must be pure. When
one of them fails (``ExpressionError``), the step it belongs to fails, without retries, and its
``on_error`` applies.

Flow is driven by a work queue rather than by recursion: entering the step after a finished one
(and re-checking a DAG step whose dependency finished) is queued and drained before ``decide``
returns, so a long chain of pure steps or a loop over pure steps cannot exhaust the stack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from statemachine import errors
from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata, saga, scopes, timers
from statemachine.runtime import plan as plans
from statemachine.runtime import state as state_mod
from statemachine.runtime.state import MAP, State, StepState
from statemachine.runtime.transitions import (
    Cancel,
    ChildFinished,
    ChildStarted,
    Decision,
    Event,
    EventArrived,
    HistoryItem,
    Retry,
    Start,
    StepFailed,
    StepSucceeded,
    Tick,
    child_id,
)

__all__ = [
    "Cancel",
    "ChildFinished",
    "ChildStarted",
    "Decision",
    "Event",
    "EventArrived",
    "HistoryItem",
    "Retry",
    "Start",
    "StepFailed",
    "StepSucceeded",
    "Tick",
    "child_id",
    "decide",
    "next_wake",
]

FINISHED = state_mod.FINISHED
SETTLED = state_mod.SETTLED
TERMINAL = state_mod.TERMINAL
# Steps entered in one decision before the instance is failed as making no progress (a loop
# over pure steps whose condition never turns false, with no interval and only a timeout).
MAX_ENTERS_PER_DECISION = 10_000


def _ancestors(path: str) -> Iterator[tuple[str, str]]:
    """(container path, branch name) of every parallel/map enclosing ``path``, outermost first."""
    parts = path.split("/")
    for i in range(1, len(parts) - 1, 2):
        yield "/".join(parts[:i]), parts[i]


# steps whose input (tasks, polls, subworkflows, maps) or output (pass) ``begin`` computes
_STORED_VALUES = (
    models.TaskStep,
    models.PollStep,
    models.SubworkflowStep,
    models.PassStep,
    models.MapStep,
)


def _expression_error(exc: errors.ExpressionError) -> dict[str, Any]:
    return {"type": "ExpressionError", "message": str(exc)}


class FlowRun:
    def __init__(self, plan: plans.Plan, state: State, now: datetime, instance_id: str) -> None:
        self.plan = plan
        self.definition = plan.definition
        self.s = state
        self.now = now
        self.instance_id = instance_id
        self.d = Decision(state)
        # ("enter", path, prev) or ("consider", path, None), drained by ``drain``
        self.queue: deque[tuple[str, str, str | None]] = deque()
        self.entered = 0

    # -- bookkeeping --------------------------------------------------------------------
    def log(self, type_: str, step: str | None = None, **data: Any) -> None:
        self.d.history.append(HistoryItem(type_, step, data))

    def touch(self, st: StepState) -> None:
        self.d.changed.add(st.path)

    def activate(self, path: str) -> None:
        if path not in self.s.active:
            self.s.active.append(path)

    def deactivate(self, path: str) -> None:
        if path in self.s.active:
            self.s.active.remove(path)

    def view(self, path: str, prev: str | None) -> flowctx.FlowView:
        return flowctx.view(self.plan, self.s, path, prev, self.instance_id)

    @property
    def terminal(self) -> bool:
        return self.s.status in TERMINAL

    def alive(self, path: str) -> bool:
        """Whether a step at ``path`` may still start: the instance and every enclosing branch run."""
        if self.terminal:
            return False
        for container, branch in _ancestors(path):
            parent = self.s.peek(container)
            if parent is None or parent.status != "running":
                return False
            result = self.s.branches.get(container, {}).get(branch)
            if result is None or result.get("status") != "running":
                return False
        return True

    def scope_alive(self, scope: plans.Scope) -> bool:
        return self.alive(scope.prefix + (scope.steps[0].name if scope.steps else "_"))

    # -- the work queue ----------------------------------------------------------------
    def schedule_enter(self, path: str, prev: str | None) -> None:
        self.queue.append(("enter", path, prev))

    def schedule_consider(self, path: str) -> None:
        if ("consider", path, None) not in self.queue:
            self.queue.append(("consider", path, None))

    def queued_in(self, scope: plans.Scope) -> bool:
        return any(self.plan.node(path).scope is scope for _, path, _ in self.queue)

    def drain(self) -> None:
        if self.s.status == "paused":  # no new step starts while paused: resume enters them
            self.s.deferred.extend([kind, path, prev] for kind, path, prev in self.queue)
            self.queue.clear()
            return
        if self.s.deferred and self.s.status in ("running", "waiting"):
            self.queue.extend((str(k), str(p), v) for k, p, v in self.s.deferred)
            self.s.deferred.clear()
        while self.queue:
            kind, path, prev = self.queue.popleft()
            self.entered += 1
            if self.entered > MAX_ENTERS_PER_DECISION:
                self.queue.clear()
                self.give_up()
                return
            if kind in saga.REDO_KINDS:
                saga.redo_work(self, kind, path)
            elif kind == "consider":
                if self.alive(path):
                    self.consider(path)
                    self.maybe_finish_dag(self.plan.node(path).scope)
            elif self.alive(path):
                self.enter(path, prev)
            elif not self.terminal or self.s.status == "failed":
                # its scope ended meanwhile (a race was won, a sibling failed): record the step
                # as cancelled so that a retry of the instance resumes from it
                self.cancelled_before_start(path, prev)

    def give_up(self) -> None:
        self.cancel_active("failed")
        self.finish_workflow(
            "failed",
            error={
                "type": "NoProgress",
                "message": f"more than {MAX_ENTERS_PER_DECISION} steps ran without waiting for "
                "anything; a loop over pure steps needs an interval, a task or a reachable end",
            },
        )

    def cancelled_before_start(self, path: str, prev: str | None) -> None:
        self.fresh(path, prev, status="cancelled", completed_at=self.now)
        self.log("workflow.step.cancelled", path, reason="not started")

    # -- entering steps ----------------------------------------------------------------
    def fresh(self, path: str, prev: str | None, **fields: Any) -> StepState:
        """A new record for ``path`` in place of any earlier one: a step entered again (loop,
        choice) counts one more iteration; one reset to pending (retry, DAG restart) keeps its."""
        old = self.s.peek(path)
        iteration = 0 if old is None else old.iteration + (old.status != "pending")
        if old is not None and old.status == "completed":
            self.s.latest[path] = old.output  # seen by the body of a loop until it is replaced
        st = StepState(path=path, prev=prev, iteration=iteration, **fields)
        self.s.steps[path] = st
        self.touch(st)
        return st

    def new_state(self, path: str, prev: str | None) -> StepState:
        """A fresh attempt record, started now."""
        st = self.fresh(path, prev, started_at=self.now)
        self.activate(path)
        self.log("workflow.step.started", path, iteration=st.iteration)
        return st

    def enter(self, path: str, prev: str | None) -> None:
        node = self.plan.node(path)
        step = node.step
        if step.condition is not None and not isinstance(step, models.LoopStep):
            try:
                ok, values = flowctx.condition_with_values(
                    step.condition, self.view(path, prev), what=f"condition of {path!r}"
                )
            except errors.ExpressionError as exc:
                self.fail(self.new_state(path, prev), _expression_error(exc), retry=False)
                return
            if not ok:
                reason = {
                    "reason": "condition",
                    "condition": flowctx.describe(step.condition),
                    "values": values,
                }
                self.skip(path, prev, reason)
                return
        st = self.new_state(path, prev)
        if step.delay:
            st.status, st.phase = "waiting", "delay"
            st.wake_at = self.now + timedelta(seconds=step.delay)
            return
        self.begin(st, node)

    def begin(self, st: StepState, node: plans.Node) -> None:
        step = node.step
        value: Any = None
        if isinstance(step, models.TaskStep | models.PollStep) and step.input is None:
            # the common case needs only ``prev``, not the whole view
            self.run_task(
                st, step, jsondata.copy_json(flowctx.prev_of(self.plan, self.s, st.path, st.prev))
            )
            return
        try:
            view = self.view(st.path, st.prev)
            if isinstance(step, models.TaskStep | models.PollStep | models.SubworkflowStep):
                value = flowctx.task_input(step, view)
            elif isinstance(step, models.PassStep):
                value = flowctx.pass_output(step, view)
            elif isinstance(step, models.ChoiceStep):
                value = flowctx.choose(step, view)
            elif isinstance(step, models.WaitStep):
                if not step.event and step.duration is None:
                    value = flowctx.until(step, view)
            elif isinstance(step, models.LoopStep):
                value = flowctx.condition(step.condition, view, what=f"loop {st.path!r}")
            elif isinstance(step, models.MapStep):
                value = flowctx.map_items(step, view)
        except errors.ExpressionError as exc:
            if isinstance(step, models.LoopStep):
                self.end_loop(st.path, node)
            self.fail(st, _expression_error(exc), retry=False)
            return
        if isinstance(step, _STORED_VALUES):
            # a mapper's or transform's value is stored: checked as outputs are, so that no
            # database refuses it (nor one accepts what another refuses)
            try:
                value = jsondata.to_storable(value, what=f"the value of step {st.path!r}")
            except errors.OutputNotStorable as exc:
                self.fail(st, {"type": type(exc).__name__, "message": str(exc)}, retry=False)
                return
        if isinstance(step, models.TaskStep | models.PollStep):
            self.run_task(st, step, value)
        elif isinstance(step, models.SubworkflowStep):
            st.input = value
            st.status, st.phase, st.wake_at = "running", "child", None
            st.attempts += 1
        elif isinstance(step, models.PassStep):
            self.succeed(st, value)
        elif isinstance(step, models.ChoiceStep):
            if value is None:
                self.fail(
                    st,
                    {
                        "type": "NoChoiceMatched",
                        "message": f"no choice of {st.path!r} matched and it has no default",
                    },
                    retry=False,
                )
                return
            self.succeed(st, jsondata.copy_json(view.prev), goto=self.plan.sibling(node, value))
        elif isinstance(step, models.WaitStep):
            self.begin_wait(st, step, value)
        elif isinstance(step, models.LoopStep):
            self.loop(st, node, view, bool(value))
        elif isinstance(step, models.ParallelStep):
            st.status, st.phase = "running", "branches"
            self.s.branches[st.path] = {}
            self.start_branches(st, step)
            if not step.branches:
                self.maybe_join(st, step)
        elif isinstance(step, models.MapStep):
            st.status, st.phase = "running", "branches"
            st.input = value  # the items, stored once with the map's step row
            self.s.branches[st.path] = {MAP: {"items": value, "next": 0}}
            self.next_item(st, step)

    def run_task(
        self, st: StepState, step: models.TaskStep | models.PollStep, payload: Any
    ) -> None:
        """The handler (or poll check) of ``st`` is to run now, with ``payload``."""
        st.input = payload
        st.status, st.phase, st.wake_at = "running", "run", None
        st.attempts += 1
        if isinstance(step, models.PollStep) and step.timeout is not None:
            st.deadline = self.now + timedelta(seconds=step.timeout)

    def start_scope(self, scope: plans.Scope, prev: str | None) -> None:
        scopes.start_scope(self, scope, prev)

    def start_branches(self, parent: StepState, step: models.ParallelStep) -> None:
        scopes.start_branches(self, parent, step)

    def next_item(self, parent: StepState, step: models.MapStep) -> None:
        scopes.next_item(self, parent, step)

    def begin_wait(self, st: StepState, step: models.WaitStep, until: Any) -> None:
        timers.begin_wait(self, st, step, until)

    def loop(self, st: StepState, node: plans.Node, view: flowctx.FlowView, holds: bool) -> None:
        timers.loop(self, st, node, view, holds)

    def end_loop(self, path: str, node: plans.Node) -> None:
        timers.end_loop(self, path, node)

    def jump(self, st: StepState, node: plans.Node) -> None:
        timers.jump(self, st, node)

    # -- finishing steps ---------------------------------------------------------------
    def succeed(self, st: StepState, output: Any, goto: str | None = None) -> None:
        st.status, st.phase, st.output, st.error, st.wake_at = "completed", "", output, None, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        self.s.latest.pop(st.path, None)
        saga.completed(self, st)
        self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
        if "/" not in st.path:
            self.log("workflow.progress", st.path, progress=self.progress())
        if saga.redone(self, st):
            return  # run again after its compensation, by a retry: the flow resumes elsewhere
        self.advance(st, goto)

    def forget_settled(self) -> None:
        """A step that completed or was skipped keeps only what its row holds: no later decision
        reads the rest, the state column leaves it out (``State.frontier_json``), and a state
        restored from the database must equal the one that was saved."""
        for path in self.d.changed:
            st = self.s.peek(path)
            if st is None or st.status not in SETTLED:
                continue
            if st.prev or st.phase or st.event or st.deadline or st.handled:
                st = self.s.steps[path]  # a private copy
                st.prev, st.phase, st.event, st.deadline, st.handled = None, "", None, None, False

    def progress(self) -> int:
        """Finished top-level steps, in percent: the memo of the state this decision started
        from (its clone holds it unchanged until ``remember``), corrected by the steps this
        decision changed."""
        known = self.s.finished_top
        if known is None:
            done = len(self.finished_top())
        else:
            done = len(known)
            for path in self.d.changed & self.plan.top_level:
                st = self.s.peek(path)
                done += (st is not None and st.status in FINISHED) - (path in known)
        return min(100, round(100 * done / max(1, self.plan.top_level_count)))

    def finished_top(self) -> frozenset[str]:
        return frozenset(
            name
            for name in self.plan.top_level
            if (st := self.s.peek(name)) is not None and st.status in FINISHED
        )

    def remember(self) -> None:
        """The memos of the state (``State.finished_top``, ``State.unsettled``) after this
        decision: the steps it changed are the only ones whose status may have changed (their
        rows are what it writes)."""
        s, changed = self.s, self.d.changed
        if s.finished_top is None:
            s.finished_top = self.finished_top()
        elif changed:
            top = changed & self.plan.top_level
            done = {p for p in top if (st := s.peek(p)) is not None and st.status in FINISHED}
            s.finished_top = (s.finished_top - top) | done
        if s.unsettled is not None and changed:
            open_ = {
                p for p in changed if (st := s.peek(p)) is not None and st.status not in SETTLED
            }
            s.unsettled = (s.unsettled - changed) | open_

    def fail(self, st: StepState, error: dict[str, Any], *, retry: bool = True) -> None:
        node = self.plan.node(st.path)
        step = node.step
        error = {**error, "step": st.path, "attempt": st.attempts}
        policy = flowctx.retry_policy(self.definition, step)
        if retry and policy is not None and st.attempts < policy.max_attempts:
            delay = flowctx.retry_delay(policy, st.attempts)
            st.status, st.phase, st.error = "waiting", "retry", error
            st.wake_at = self.now + timedelta(seconds=delay)
            self.touch(st)
            self.log("workflow.step.retry", st.path, error=error, attempt=st.attempts, delay=delay)
            return
        st.status, st.phase, st.error, st.wake_at = "failed", "", error, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        self.log("workflow.step.failed", st.path, error=error, attempt=st.attempts)
        if saga.redo_failed(self, st, error):
            return
        if step.on_error == "continue":
            st.handled = True
            self.advance(st, None, output={"error": error})
        elif step.on_error == "branch" and step.error_next:
            st.handled = True
            self.schedule_enter(self.plan.sibling(node, step.error_next), st.path)
            if node.scope.dag:  # its dependents see a handled failure (as if skipped)
                self.advance(st, None)
        else:
            self.scope_failed(node.scope, error)

    def skip(self, path: str, prev: str | None, reason: dict[str, Any]) -> None:
        """Skip ``path``; ``reason`` is history's data (its kind under ``reason``), and the
        step's ``reason`` (its kind under ``kind``), which its dependents' trigger rules read."""
        details = {k: v for k, v in reason.items() if k != "reason"}
        st = self.fresh(path, prev, status="skipped", completed_at=self.now)
        st.reason = {"kind": reason["reason"], **details}
        self.s.latest.pop(path, None)  # skipped this time: no result to show
        self.deactivate(path)
        self.log("workflow.step.skipped", path, **reason)
        self.advance(st, None)

    # -- flow --------------------------------------------------------------------------
    def advance(self, st: StepState, goto: str | None, output: Any = None) -> None:
        node = self.plan.node(st.path)
        scope = node.scope
        if scope.dag:
            for name in scope.dependents.get(node.step.name, ()):
                self.schedule_consider(scope.prefix + name)
            self.maybe_finish_dag(scope)
            return
        target = goto if goto is not None else self.plan.next_of(node)
        skipped = st.status == "skipped"  # a skipped step passes its own input on
        if target is not None:
            self.schedule_enter(target, st.prev if skipped else st.path)
            return
        if st.status == "completed":
            output = st.output
        elif skipped:
            output = jsondata.copy_json(self.view(st.path, st.prev).prev)
        self.scope_done(scope, output)

    def consider(self, path: str) -> None:
        scopes.consider(self, path)

    def maybe_finish_dag(self, scope: plans.Scope) -> None:
        scopes.maybe_finish_dag(self, scope)

    def scope_done(self, scope: plans.Scope, output: Any) -> None:
        scopes.scope_done(self, scope, output)

    def scope_failed(self, scope: plans.Scope, error: dict[str, Any]) -> None:
        scopes.scope_failed(self, scope, error)

    def maybe_join(self, parent: StepState, step: models.ParallelStep) -> None:
        scopes.maybe_join(self, parent, step)

    def cancel_under(self, prefix: str, reason: str) -> None:
        for path in [p for p in self.s.active if p.startswith(prefix)]:
            self.cancel_step(path, reason)

    def cancel_step(self, path: str, reason: str) -> None:
        st = self.s.step(path)
        if st.status in ("running", "waiting", "pending"):
            st.status, st.phase, st.wake_at, st.completed_at = "cancelled", "", None, self.now
            self.touch(st)
            self.log("workflow.step.cancelled", path, reason=reason)
        self.deactivate(path)

    def cancel_active(self, reason: str) -> None:
        for path in list(self.s.active):
            self.cancel_step(path, reason)

    def finish_workflow(
        self, status: str, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        self.s.status = status
        self.s.output, self.s.error = output, error
        self.s.completed_at = self.now
        if status == "completed" and not any(
            h.type == "workflow.progress" and h.data.get("progress") == 100 for h in self.d.history
        ):
            self.log("workflow.progress", None, progress=100)
        data: dict[str, Any] = {"output": output} if status == "completed" else {"error": error}
        self.log(f"workflow.{status}", None, **data)

    # -- saga ----------------------------------------------------------------------------
    def fail_workflow(self, error: dict[str, Any]) -> None:
        saga.fail_workflow(self, error)

    def next_compensation(self) -> None:
        saga.next_compensation(self)

    def compensation_done(
        self, st: StepState, output: Any, error: dict[str, Any] | None, retry: bool
    ) -> None:
        saga.compensation_done(self, st, output, error, retry)

    # -- subworkflows --------------------------------------------------------------------
    def child_started(self, path: str) -> None:
        saga.child_started(self, path)

    def child_finished(self, event: ChildFinished) -> None:
        saga.child_finished(self, event)

    # -- events ------------------------------------------------------------------------
    def start(self) -> None:
        if self.s.status != "pending":
            return
        self.s.status = "running"
        self.s.started_at = self.now
        if self.definition.timeout is not None:
            self.s.deadline = self.now + timedelta(seconds=self.definition.timeout)
        self.start_scope(self.plan.top, None)

    def resumable(self, path: str) -> bool:
        """A failed or cancelled step a retry continues from: no enclosing step is done with it."""
        for container, _ in _ancestors(path):
            parent = self.s.steps.get(container)
            if parent is None:
                return False
            if parent.status == "failed" and parent.handled:
                return False
            if parent.status not in ("failed", "cancelled", "running"):
                return False
        return True

    def retry(self) -> None:
        """A failed instance goes on: steps undone by compensation run again first (in the
        order they first completed), then the failed and cancelled steps are resumed."""
        if self.s.status != "failed":
            return
        self.s.status, self.s.error, self.s.completed_at, self.s.output = (
            "running",
            None,
            None,
            None,
        )
        if not saga.redo_compensated(self):
            self.resume_failed()

    def resume_failed(self) -> None:
        """Continue from every failed (not handled) and cancelled step a retry can resume."""
        found = [
            self.s.steps[st.path]  # a private copy: these records change below
            for st in list(self.s.steps.values())
            if ((st.status == "failed" and not st.handled) or st.status == "cancelled")
            and not saga.is_compensation(st.path)  # an undo that failed is not a step to resume
            and self.resumable(st.path)
        ]
        containers = sorted(
            (st for st in found if models.child_branches(self.plan.node(st.path).step)),
            key=lambda st: st.path.count("/"),
        )
        leaves = [st for st in found if not models.child_branches(self.plan.node(st.path).step)]
        for parent in containers:
            parent.status, parent.phase, parent.error, parent.completed_at = (
                "running",
                "branches",
                None,
                None,
            )
            self.touch(parent)
            self.activate(parent.path)
            results = self.s.branches.setdefault(parent.path, {})
            for name, result in list(results.items()):
                if result.get("status") == "failed":
                    kept = {k: v for k, v in result.items() if k != "error"}
                    results[name] = {**kept, "status": "running"}
        for st in leaves:
            st.status, st.attempts, st.error, st.phase, st.wake_at = "pending", 0, None, "", None
            self.touch(st)
            self.schedule_enter(st.path, st.prev)
        for parent in containers:
            step = self.plan.node(parent.path).step
            if isinstance(step, models.ParallelStep):
                self.start_branches(parent, step)
            elif isinstance(step, models.MapStep):
                self.next_item(parent, step)
        self.drain()
        for parent in containers:  # branches that had finished before: the join may be due
            step = self.plan.node(parent.path).step
            if isinstance(step, models.ParallelStep):
                self.maybe_join(parent, step)

    def tick(self) -> None:
        timers.tick(self)

    def wake(self, st: StepState) -> None:
        timers.wake(self, st)

    def running(self, path: str) -> StepState | None:
        """The step if its handler result is expected now; None for a late or unknown result."""
        st = self.s.steps.get(path)
        if st is None or st.status != "running" or st.phase != "run" or path not in self.s.active:
            return None
        return st

    def succeeded(self, path: str, output: Any) -> None:
        st = self.running(path)
        if st is None:
            return  # a late result of a cancelled step
        if saga.is_compensation(path):
            self.compensation_done(st, output, None, False)
            return
        step = self.plan.node(path).step
        if isinstance(step, models.PollStep):
            found = flowctx.poll_result(output)
            if found is None:
                self.fail(st, flowctx.poll_shape_error(path, output), retry=False)
                return
            done, result = found
            if done:
                self.succeed(st, result)
                return
            self.log("workflow.step.poll", path, attempt=st.attempts, result=result)
            if step.max_attempts is not None and st.attempts >= step.max_attempts:
                self.fail(
                    st,
                    {
                        "type": "StepTimeoutError",
                        "message": f"poll {path!r} not done after {st.attempts} checks",
                    },
                    retry=False,
                )
                return
            st.status, st.phase = "waiting", "poll"
            st.wake_at = self.now + timedelta(seconds=step.interval)
            if st.deadline is not None and st.wake_at > st.deadline:
                st.wake_at = st.deadline
            self.touch(st)
            return
        self.succeed(st, output)

    def failed(self, path: str, error: dict[str, Any], retryable: bool) -> None:
        st = self.running(path)
        if st is None:
            return
        if saga.is_compensation(path):
            self.compensation_done(st, None, error, retryable)
            return
        self.fail(st, error, retry=retryable)

    def event(self, name: str, data: Any) -> None:
        for path in list(self.s.active):
            st = self.s.steps.get(path)
            if (
                st is not None
                and st.phase == "event"
                and st.event == name
                and st.status == "waiting"
            ):
                self.d.consumed_event = True
                self.log("workflow.event.received", path, name=name)
                self.succeed(st, data)
                return

    def cancel(self, reason: str) -> None:
        if self.terminal:
            return
        self.queue.clear()
        self.cancel_active(reason)
        self.finish_workflow("cancelled", error={"type": "Cancelled", "message": reason})


Handler = Callable[..., Any]


def decide(
    plan: plans.Plan, state: State, event: Event, now: datetime, instance_id: str
) -> Decision:
    """Apply one event to a copy of ``state``; the input state is never modified."""
    run = FlowRun(plan, state.clone(), now, instance_id)
    # past the workflow's deadline a result, an event or a child's end is too late to count
    if not isinstance(event, Start | Retry | Cancel) and timers.expire(run):
        pass
    elif isinstance(event, Start):
        run.start()
    elif isinstance(event, StepSucceeded):
        run.succeeded(event.path, event.output)
    elif isinstance(event, StepFailed):
        run.failed(event.path, event.error, event.retryable)
    elif isinstance(event, Tick):
        run.tick()
    elif isinstance(event, EventArrived):
        run.event(event.name, event.data)
    elif isinstance(event, Retry):
        run.retry()
    elif isinstance(event, Cancel):
        run.cancel(event.reason)
    elif isinstance(event, ChildStarted):
        run.child_started(event.path)
    elif isinstance(event, ChildFinished):
        run.child_finished(event)
    run.drain()
    leaves = [st for p in run.s.active if (st := run.s.peek(p)) and st.phase != "branches"]
    if run.s.status == "running" and leaves and all(st.status == "waiting" for st in leaves):
        run.s.status = "waiting"
    elif run.s.status == "waiting" and any(st.status == "running" for st in leaves):
        run.s.status = "running"
    run.forget_settled()
    run.remember()
    run.s.settle()
    return run.d


def next_wake(state: State) -> datetime | None:
    """The earliest timer of the instance (retry, poll, delay, wait, timeout); None if none.

    Work that can run now (``Decision.runnable``) is not a timer: callers check it first.
    """
    if state.status in TERMINAL:
        return None
    times = [state.deadline] if state.deadline else []
    for path in state.active:
        st = state.steps.get(path)
        if st is None:
            continue
        if st.wake_at:
            times.append(st.wake_at)
        if st.deadline:
            times.append(st.deadline)
    return min(times) if times else None
