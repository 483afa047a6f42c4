"""Flow rules that involve time: waits, loops (with intervals and bounds), and the timer tick."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata, saga
from statemachine.runtime import plan as plans
from statemachine.runtime.state import StepState

if TYPE_CHECKING:
    from statemachine.runtime.interpreter import FlowRun


def begin_wait(run: FlowRun, st: StepState, step: models.WaitStep, until: Any) -> None:
    st.status = "waiting"
    if step.event:
        st.phase, st.event = "event", step.event
        if step.timeout is not None:
            st.deadline = run.now + timedelta(seconds=step.timeout)
        return
    st.phase = "timer"
    if step.duration is not None:
        st.wake_at = run.now + timedelta(seconds=step.duration)
    else:
        st.wake_at = until


def loop(
    run: FlowRun, st: StepState, node: plans.Node, view: flowctx.FlowView, holds: bool
) -> None:
    step = node.step
    assert isinstance(step, models.LoopStep)
    key = node.scope.prefix + step.target
    if not holds:
        run.end_loop(st.path, node)
        run.succeed(st, jsondata.copy_json(view.prev))
        return
    started = run.s.loop_started.setdefault(st.path, run.now)
    count = run.s.loops.get(key, 0) + 1
    if step.max_iterations is not None and count > step.max_iterations:
        run.end_loop(st.path, node)
        run.fail(
            st,
            {
                "type": "LoopLimitExceeded",
                "message": f"loop {st.path!r} exceeded {step.max_iterations} iterations",
            },
            retry=False,
        )
        return
    if step.timeout is not None and run.now >= started + timedelta(seconds=step.timeout):
        run.end_loop(st.path, node)
        run.fail(
            st,
            {
                "type": "StepTimeoutError",
                "message": f"loop {st.path!r} exceeded its timeout of {step.timeout:g}s",
            },
            retry=False,
        )
        return
    run.s.loops[key] = count
    run.log("workflow.step.loop", st.path, iteration=count, target=step.target)
    if step.interval:
        st.status, st.phase = "waiting", "loop"
        st.wake_at = run.now + timedelta(seconds=step.interval)
        run.touch(st)
        return
    run.jump(st, node)


def end_loop(run: FlowRun, path: str, node: plans.Node) -> None:
    step = node.step
    assert isinstance(step, models.LoopStep)
    run.s.loop_started.pop(path, None)
    run.s.loops.pop(node.scope.prefix + step.target, None)


def jump(run: FlowRun, st: StepState, node: plans.Node) -> None:
    step = node.step
    assert isinstance(step, models.LoopStep)
    st.output = jsondata.copy_json(run.view(st.path, st.prev).prev)  # what the loop passes on
    st.status, st.phase, st.wake_at = "completed", "", None
    st.completed_at = run.now
    run.touch(st)
    run.deactivate(st.path)
    target = run.plan.sibling(node, step.target)
    # the target sees what led to the loop; a loop on itself keeps its own predecessor
    run.schedule_enter(target, st.prev if target == st.path else st.path)


def expire(run: FlowRun) -> bool:
    """End the instance as ``timed_out`` if its deadline has passed; True if it did. Whatever
    else happened (a result, an event) came too late to count."""
    compensating = run.s.status == "compensating"  # undoing is allowed to outlive the deadline
    if run.s.deadline is None or run.now < run.s.deadline or run.terminal or compensating:
        return False
    run.cancel_active("timed_out")
    run.finish_workflow(
        "timed_out",
        error={"type": "WorkflowTimeout", "message": "the workflow exceeded its timeout"},
    )
    return True


def tick(run: FlowRun) -> None:
    if expire(run):
        return
    for path in list(run.s.active):
        if run.s.status not in ("running", "waiting", "compensating"):
            return
        st = run.s.steps.get(path)
        if st is None or path not in run.s.active:
            continue
        if st.phase == "event" and st.deadline is not None and run.now >= st.deadline:
            run.fail(
                st,
                {
                    "type": "StepTimeoutError",
                    "message": f"no event {st.event!r} within the timeout",
                },
                retry=False,
            )
        elif st.phase == "poll" and st.deadline is not None and run.now >= st.deadline:
            run.fail(
                st,
                {"type": "StepTimeoutError", "message": f"poll {path!r} timed out"},
                retry=False,
            )
        elif st.status == "waiting" and st.wake_at is not None and run.now >= st.wake_at:
            run.wake(st)
        run.drain()


def wake(run: FlowRun, st: StepState) -> None:
    node = run.plan.node(saga.base_path(st.path))
    phase, st.wake_at = st.phase, None
    run.touch(st)
    if phase == "delay":
        run.begin(st, node)
    elif phase in ("retry", "poll"):
        st.status, st.phase = "running", "run"
        st.attempts += 1
    elif phase == "timer":
        run.succeed(st, jsondata.copy_json(run.view(st.path, st.prev).prev))
    elif phase == "loop":
        run.jump(st, node)
