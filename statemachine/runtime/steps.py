"""The step machine: entering a step, doing what its kind does, and finishing it.

A step is entered (its condition checked), begun (its input or output computed, its handler left
to run), then succeeds, fails (retried, or its ``on_error`` applies) or is skipped; the flow then
advances to the next step of its scope. Entering the next step is queued and drained before the
decision returns (``drain``), so a long chain of pure steps cannot exhaust the stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from statemachine import errors
from statemachine.definition import models
from statemachine.runtime import compute, flowview, jsondata, paths, polls, retries
from statemachine.runtime.flowbase import CONSIDER, ENTER, FlowBase
from statemachine.runtime.plan import Node
from statemachine.runtime.state import MAP, StepState
from statemachine.vocabulary import ErrorInfo, InstanceStatus, Phase, StepStatus, error_info

# Steps entered in one decision before the instance is failed as making no progress (a loop
# over pure steps whose condition never turns false, with no interval and only a timeout).
MAX_ENTERS_PER_DECISION = 10_000

# steps whose input (tasks, polls, subworkflows, maps) or output (pass) ``begin`` computes
_STORED_VALUES = (
    models.TaskStep,
    models.PollStep,
    models.SubworkflowStep,
    models.PassStep,
    models.MapStep,
)


def _expression_error(exc: errors.ExpressionError) -> ErrorInfo:
    return error_info("ExpressionError", str(exc))


class StepMachine(FlowBase):
    """Entering, beginning and finishing steps, and the handler results of tasks and polls."""

    # -- the work queue ----------------------------------------------------------------
    def drain(self) -> None:
        state = self.state
        if state.status == InstanceStatus.PAUSED:  # no new step starts: resume enters them
            state.deferred.extend([kind, path, prev] for kind, path, prev in self.queue)
            self.queue.clear()
            return
        if state.deferred and state.status in (InstanceStatus.RUNNING, InstanceStatus.WAITING):
            self.queue.extend((str(k), str(p), v) for k, p, v in state.deferred)
            state.deferred.clear()
        while self.queue:
            kind, path, prev = self.queue.popleft()
            self.entered += 1
            if self.entered > MAX_ENTERS_PER_DECISION:
                self.queue.clear()
                self.give_up()
                return
            if kind == CONSIDER:
                if self.alive(path):
                    self.consider(path)
                    self.maybe_finish_dag(self.plan.node(path).scope)
            elif kind != ENTER:
                self.redo_work(kind, path)
            elif self.alive(path):
                self.enter(path, prev)
            elif not self.terminal or state.status == InstanceStatus.FAILED:
                # its scope ended meanwhile (a race was won, a sibling failed): record the step
                # as cancelled so that a retry of the instance resumes from it
                self.fresh(path, prev, status=StepStatus.CANCELLED, completed_at=self.now)
                self.log("workflow.step.cancelled", path, reason="not started")

    def give_up(self) -> None:
        self.cancel_active("failed")
        message = (
            f"more than {MAX_ENTERS_PER_DECISION} steps ran without waiting for anything; "
            "a loop over pure steps needs an interval, a task or a reachable end"
        )
        self.finish_workflow(InstanceStatus.FAILED, error=error_info("NoProgress", message))

    # -- entering steps ----------------------------------------------------------------
    def enter(self, path: str, prev: str | None) -> None:
        node = self.plan.node(path)
        step = node.step
        if step.condition is not None and not isinstance(step, models.LoopStep):
            try:
                ok, values = compute.condition_with_values(
                    step.condition, self.view(path, prev), what=f"condition of {path!r}"
                )
            except errors.ExpressionError as exc:
                self.fail(self.new_state(path, prev), _expression_error(exc), retry=False)
                return
            if not ok:
                reason = {
                    "reason": "condition",
                    "condition": compute.describe(step.condition),
                    "values": values,
                }
                self.skip(path, prev, reason)
                return
        st = self.new_state(path, prev)
        if step.delay:
            st.status, st.phase = StepStatus.WAITING, Phase.DELAY
            st.wake_at = self.now + timedelta(seconds=step.delay)
            return
        self.begin(st, node)

    def begin(self, st: StepState, node: Node) -> None:
        step = node.step
        value: Any = None
        if isinstance(step, models.TaskStep | models.PollStep) and step.input is None:
            # the common case needs only ``prev``, not the whole view
            prev = flowview.prev_of(self.plan, self.state, st.path, st.prev)
            self.run_task(st, step, jsondata.copy_json(prev))
            return
        try:
            view = self.view(st.path, st.prev)
            if isinstance(step, models.TaskStep | models.PollStep | models.SubworkflowStep):
                value = compute.task_input(step, view)
            elif isinstance(step, models.PassStep):
                value = compute.pass_output(step, view)
            elif isinstance(step, models.ChoiceStep):
                value = compute.choose(step, view)
            elif isinstance(step, models.WaitStep):
                if not step.event and step.duration is None:
                    value = compute.until(step, view)
            elif isinstance(step, models.LoopStep):
                value = compute.condition(step.condition, view, what=f"loop {st.path!r}")
            elif isinstance(step, models.MapStep):
                value = compute.map_items(step, view)
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
                self.fail(st, error_info(type(exc).__name__, str(exc)), retry=False)
                return
        if isinstance(step, models.TaskStep | models.PollStep):
            self.run_task(st, step, value)
        elif isinstance(step, models.SubworkflowStep):
            st.input = value
            st.status, st.phase, st.wake_at = StepStatus.RUNNING, Phase.CHILD, None
            st.attempts += 1
        elif isinstance(step, models.PassStep):
            self.succeed(st, value)
        elif isinstance(step, models.ChoiceStep):
            if value is None:
                message = f"no choice of {st.path!r} matched and it has no default"
                self.fail(st, error_info("NoChoiceMatched", message), retry=False)
                return
            self.succeed(st, jsondata.copy_json(view.prev), goto=self.plan.sibling(node, value))
        elif isinstance(step, models.WaitStep):
            self.begin_wait(st, step, value)
        elif isinstance(step, models.LoopStep):
            self.loop(st, node, view, bool(value))
        elif isinstance(step, models.ParallelStep):
            st.status, st.phase = StepStatus.RUNNING, Phase.BRANCHES
            self.state.branches[st.path] = {}
            self.start_branches(st, step)
            if not step.branches:
                self.maybe_join(st, step)
        elif isinstance(step, models.MapStep):
            st.status, st.phase = StepStatus.RUNNING, Phase.BRANCHES
            st.input = value  # the items, stored once with the map's step row
            self.state.branches[st.path] = {MAP: {"items": value, "next": 0}}
            self.next_item(st, step)

    def run_task(
        self, st: StepState, step: models.TaskStep | models.PollStep, payload: Any
    ) -> None:
        st.input = payload
        st.status, st.phase, st.wake_at = StepStatus.RUNNING, Phase.RUN, None
        st.attempts += 1
        if isinstance(step, models.PollStep) and step.timeout is not None:
            st.deadline = self.now + timedelta(seconds=step.timeout)

    # -- finishing steps ---------------------------------------------------------------
    def succeed(self, st: StepState, output: Any, goto: str | None = None) -> None:
        st.status, st.phase, st.output = StepStatus.COMPLETED, Phase.NONE, output
        st.error, st.wake_at, st.completed_at = None, None, self.now
        self.touch(st)
        self.deactivate(st.path)
        self.state.latest.pop(st.path, None)
        self.note_completed(st)
        self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
        if "/" not in st.path:
            self.log("workflow.progress", st.path, progress=self.progress())
        if self.redone(st):
            return  # run again after its compensation, by a retry: the flow resumes elsewhere
        self.advance(st, goto)

    def fail(self, st: StepState, error: Mapping[str, Any], *, retry: bool = True) -> None:
        node = self.plan.node(st.path)
        step = node.step
        error = {**error, "step": st.path, "attempt": st.attempts}
        policy = retries.policy_of(self.definition, step)
        if retry and policy is not None and st.attempts < policy.max_attempts:
            delay = retries.delay(policy, st.attempts)
            st.status, st.phase, st.error = StepStatus.WAITING, Phase.RETRY, error
            st.wake_at = self.now + timedelta(seconds=delay)
            self.touch(st)
            self.log("workflow.step.retry", st.path, error=error, attempt=st.attempts, delay=delay)
            return
        st.status, st.phase, st.error, st.wake_at = StepStatus.FAILED, Phase.NONE, error, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        self.log("workflow.step.failed", st.path, error=error, attempt=st.attempts)
        if self.redo_failed(st, error):
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
        st = self.fresh(path, prev, status=StepStatus.SKIPPED, completed_at=self.now)
        st.reason = {"kind": reason["reason"], **details}
        self.state.latest.pop(path, None)  # skipped this time: no result to show
        self.deactivate(path)
        self.log("workflow.step.skipped", path, **reason)
        self.advance(st, None)

    def advance(self, st: StepState, goto: str | None, output: Any = None) -> None:
        """The flow after ``st``: its DAG dependents, the next step, or the end of its scope."""
        node = self.plan.node(st.path)
        scope = node.scope
        if scope.dag:
            for name in scope.dependents.get(node.step.name, ()):
                self.schedule_consider(scope.prefix + name)
            self.maybe_finish_dag(scope)
            return
        target = goto if goto is not None else self.plan.next_of(node)
        skipped = st.status == StepStatus.SKIPPED  # a skipped step passes its own input on
        if target is not None:
            self.schedule_enter(target, st.prev if skipped else st.path)
            return
        if st.status == StepStatus.COMPLETED:
            output = st.output
        elif skipped:
            output = jsondata.copy_json(self.view(st.path, st.prev).prev)
        self.scope_done(scope, output)

    # -- handler results -----------------------------------------------------------------
    def running(self, path: str) -> StepState | None:
        """The step if its handler result is expected now; None for a late or unknown result."""
        st = self.state.peek(path)
        if (
            st is None
            or st.status != StepStatus.RUNNING
            or st.phase != Phase.RUN
            or path not in self.state.active
        ):
            return None
        return self.state.edit(path)

    def succeeded(self, path: str, output: Any) -> None:
        st = self.running(path)
        if st is None:
            return  # a late result of a cancelled step
        st.throttled = False
        if paths.is_compensation(path):
            self.compensation_done(st, output, None, False)
            return
        step = self.plan.node(path).step
        if isinstance(step, models.PollStep):
            self.polled(st, step, output)
            return
        self.succeed(st, output)

    def polled(self, st: StepState, step: models.PollStep, output: Any) -> None:
        """A poll check returned: done, not done yet (check again after the interval), or
        an answer of the wrong shape."""
        found = polls.result(output)
        if found is None:
            self.fail(st, polls.shape_error(st.path, output), retry=False)
            return
        done, result = found
        if done:
            self.succeed(st, result)
            return
        self.log("workflow.step.poll", st.path, attempt=st.attempts, result=result)
        if step.max_attempts is not None and st.attempts >= step.max_attempts:
            message = f"poll {st.path!r} not done after {st.attempts} checks"
            self.fail(st, error_info("StepTimeoutError", message), retry=False)
            return
        st.status, st.phase = StepStatus.WAITING, Phase.POLL
        st.wake_at = self.now + timedelta(seconds=step.interval)
        if st.deadline is not None and st.wake_at > st.deadline:
            st.wake_at = st.deadline
        self.touch(st)

    def deferred(self, path: str, until: datetime) -> None:
        """Its action is over its limit: wait for ``until`` (``Timers.wake`` runs it then),
        giving back the attempt ``run_task`` or ``wake`` counted for the call not made.
        History says so once per call held back, not at every recheck of a full limit. A
        compensation waits the same way (``Timers.wake`` treats it as a retry's wait)."""
        st = self.running(path)
        if st is None:
            return
        st.status, st.phase, st.wake_at = StepStatus.WAITING, Phase.LIMIT, until
        st.attempts = max(0, st.attempts - 1)
        self.touch(st)
        if not st.throttled:
            st.throttled = True
            self.log("workflow.step.throttled", path, until=until.isoformat())

    def failed(self, path: str, error: Mapping[str, Any], retryable: bool) -> None:
        st = self.running(path)
        if st is None:
            return
        st.throttled = False
        if paths.is_compensation(path):
            self.compensation_done(st, None, error, retryable)
            return
        self.fail(st, error, retry=retryable)
