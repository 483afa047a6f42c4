"""Flow rules that involve time: waits (for a timer or an event), loops (with intervals and
bounds), the timer tick, and the workflow's own timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from statemachine.definition import models
from statemachine.runtime import flowview, jsondata, paths
from statemachine.runtime.flowbase import FlowBase
from statemachine.runtime.plan import Node
from statemachine.runtime.state import StepState
from statemachine.vocabulary import InstanceStatus, Phase, StepStatus, error_info

# an instance whose timers fire on a tick (a paused one waits for resume)
_TICKING = frozenset({InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.COMPENSATING})


class Timers(FlowBase):
    """Waits, loops, timers that come due, and the workflow's deadline."""

    def begin_wait(self, st: StepState, step: models.WaitStep, until: Any) -> None:
        st.status = StepStatus.WAITING
        if step.event:
            st.phase, st.event = Phase.EVENT, step.event
            if step.timeout is not None:
                st.deadline = self.now + timedelta(seconds=step.timeout)
            return
        st.phase = Phase.TIMER
        if step.duration is not None:
            st.wake_at = self.now + timedelta(seconds=step.duration)
        else:
            st.wake_at = until

    def event(self, name: str, data: Any) -> None:
        """An event arrived: the first active step waiting for it completes with its data."""
        for path in list(self.state.active):
            st = self.state.steps.get(path)
            if (
                st is not None
                and st.phase == Phase.EVENT
                and st.event == name
                and st.status == StepStatus.WAITING
            ):
                self.decision.consumed_event = True
                self.log("workflow.event.received", path, name=name)
                self.succeed(self.state.edit(path), data)
                return

    def loop(self, st: StepState, node: Node, view: flowview.FlowView, holds: bool) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        key = node.scope.prefix + step.target
        if not holds:
            self.end_loop(st.path, node)
            self.succeed(st, jsondata.copy_json(view.prev))
            return
        started = self.state.loop_started.setdefault(st.path, self.now)
        count = self.state.loops.get(key, 0) + 1
        if step.max_iterations is not None and count > step.max_iterations:
            self.end_loop(st.path, node)
            message = f"loop {st.path!r} exceeded {step.max_iterations} iterations"
            self.fail(st, error_info("LoopLimitExceeded", message), retry=False)
            return
        if step.timeout is not None and self.now >= started + timedelta(seconds=step.timeout):
            self.end_loop(st.path, node)
            message = f"loop {st.path!r} exceeded its timeout of {step.timeout:g}s"
            self.fail(st, error_info("StepTimeoutError", message), retry=False)
            return
        self.state.loops[key] = count
        self.log("workflow.step.loop", st.path, iteration=count, target=step.target)
        if step.interval:
            st.status, st.phase = StepStatus.WAITING, Phase.LOOP
            st.wake_at = self.now + timedelta(seconds=step.interval)
            self.touch(st)
            return
        self.jump(st, node)

    def end_loop(self, path: str, node: Node) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        self.state.loop_started.pop(path, None)
        self.state.loops.pop(node.scope.prefix + step.target, None)

    def jump(self, st: StepState, node: Node) -> None:
        """A loop whose condition holds goes back to its target."""
        step = node.step
        assert isinstance(step, models.LoopStep)
        st.output = jsondata.copy_json(self.view(st.path, st.prev).prev)  # what the loop passes on
        st.status, st.phase, st.wake_at = StepStatus.COMPLETED, Phase.NONE, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        target = self.plan.sibling(node, step.target)
        # the target sees what led to the loop; a loop on itself keeps its own predecessor
        self.schedule_enter(target, st.prev if target == st.path else st.path)

    def expire(self) -> bool:
        """End the instance as ``timed_out`` if its deadline has passed; True if it did. Whatever
        else happened (a result, an event) came too late to count."""
        state = self.state
        compensating = state.status == InstanceStatus.COMPENSATING  # undoing may outlive it
        if state.deadline is None or self.now < state.deadline or self.terminal or compensating:
            return False
        self.cancel_active("timed_out")
        self.finish_workflow(
            InstanceStatus.TIMED_OUT,
            error=error_info("WorkflowTimeout", "the workflow exceeded its timeout"),
        )
        return True

    def tick(self) -> None:
        """Time passed: fire every timer that is due (and the workflow's timeout)."""
        if self.expire():
            return
        for path in list(self.state.active):
            if self.state.status not in _TICKING:
                return
            st = self.state.peek(path)  # edited only if its timer fires
            if st is None or path not in self.state.active:
                continue
            due = st.deadline is not None and self.now >= st.deadline
            if st.phase == Phase.EVENT and due:
                message = f"no event {st.event!r} within the timeout"
                self.fail(
                    self.state.edit(path), error_info("StepTimeoutError", message), retry=False
                )
            elif st.phase == Phase.POLL and due:
                message = f"poll {path!r} timed out"
                self.fail(
                    self.state.edit(path), error_info("StepTimeoutError", message), retry=False
                )
            elif (
                st.status == StepStatus.WAITING
                and st.wake_at is not None
                and self.now >= st.wake_at
            ):
                self.wake(self.state.edit(path))
            self.drain()

    def wake(self, st: StepState) -> None:
        """A waiting step's timer came due: what it waited for (``phase``) happens now."""
        node = self.plan.node(paths.base_path(st.path))
        phase, st.wake_at = st.phase, None
        self.touch(st)
        if phase == Phase.DELAY:
            self.begin(st, node)
        elif phase in (Phase.RETRY, Phase.POLL, Phase.LIMIT):
            st.status, st.phase = StepStatus.RUNNING, Phase.RUN
            st.attempts += 1
        elif phase == Phase.TIMER:
            self.succeed(st, jsondata.copy_json(self.view(st.path, st.prev).prev))
        elif phase == Phase.LOOP:
            self.jump(st, node)
