"""Compensation (saga) and subworkflow steps: what happens around a failure or a child instance."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State, StepState
from statemachine.runtime.transitions import ChildFinished

if TYPE_CHECKING:
    from statemachine.runtime.interpreter import FlowRun

SUFFIX = "#compensate"


def compensation_path(path: str) -> str:
    return path + SUFFIX


def is_compensation(path: str) -> bool:
    return path.endswith(SUFFIX)


def base_path(path: str) -> str:
    return path[: -len(SUFFIX)] if is_compensation(path) else path


def undoable(plan: plans.Plan, path: str) -> bool:
    """Whether the step at ``path`` is a task that declared ``compensate``."""
    node = plan.find(path)
    return (
        node is not None
        and isinstance(node.step, models.TaskStep)
        and node.step.compensate is not None
    )


def completed(run: FlowRun, st: StepState) -> None:
    """Note an undoable step's completion: ``State.order`` keeps each once, at its latest
    completion (the state column is rewritten on every commit, and a list of every
    completion grew with each loop pass, without bound)."""
    if undoable(run.plan, st.path):
        if st.path in run.s.order:
            run.s.order.remove(st.path)
        run.s.order.append(st.path)


def compensations(plan: plans.Plan, state: State) -> list[str]:
    """Completed tasks that declared ``compensate``, newest completion first, each once
    (a state stored before ``completed`` kept one entry per completion)."""
    out: list[str] = []
    for path in reversed(state.order):
        if path in out or not undoable(plan, path):
            continue
        done = state.peek(path)
        if done is not None and done.status == "completed":
            out.append(path)
    return out


def fail_workflow(run: FlowRun, error: dict[str, Any]) -> None:
    """Fail, after undoing completed tasks that declared ``compensate`` (newest first)."""
    todo = compensations(run.plan, run.s)
    if not todo:
        run.finish_workflow("failed", error=error)
        return
    run.s.status, run.s.error, run.s.compensations = "compensating", error, todo
    run.log("workflow.compensating", None, steps=list(todo), error=error)
    run.next_compensation()


def next_compensation(run: FlowRun) -> None:
    if not run.s.compensations:
        run.finish_workflow("failed", error=run.s.error)
        return
    path = run.s.compensations.pop(0)
    done = run.s.steps[path]
    st = StepState(
        path=compensation_path(path), status="running", phase="run", prev=path,
        input=jsondata.copy_json(done.output), attempts=1, iteration=done.iteration, started_at=run.now,
    )  # fmt: skip
    run.s.steps[st.path] = st
    run.touch(st)
    run.activate(st.path)
    run.log("workflow.step.started", st.path, compensating=path)


def compensation_done(
    run: FlowRun, st: StepState, output: Any, error: dict[str, Any] | None, retry: bool
) -> None:
    if error is not None:
        policy = flowctx.retry_policy(run.definition, run.plan.node(base_path(st.path)).step)
        error = {**error, "step": st.path, "attempt": st.attempts}
        if retry and policy is not None and st.attempts < policy.max_attempts:
            delay = flowctx.retry_delay(policy, st.attempts)
            st.status, st.phase, st.error = "waiting", "retry", error
            st.wake_at = run.now + timedelta(seconds=delay)
            run.touch(st)
            run.log("workflow.step.retry", st.path, error=error, attempt=st.attempts, delay=delay)
            return
        st.status, st.error = "failed", error
        run.s.error = {**(run.s.error or {}), "compensation_errors": [
            *(run.s.error or {}).get("compensation_errors", []), error]}  # fmt: skip
        run.log("workflow.step.failed", st.path, error=error, attempt=st.attempts)
    else:
        st.status, st.output = "completed", output
        run.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
    st.phase, st.wake_at, st.completed_at = "", None, run.now
    run.touch(st)
    run.deactivate(st.path)
    run.next_compensation()


def child_started(run: FlowRun, path: str) -> None:
    st = run.s.steps.get(path)
    if st is not None and path in run.s.active and st.status == "running" and st.phase == "child":
        st.status, st.phase = "waiting", "child-wait"
        run.touch(st)


def child_finished(run: FlowRun, event: ChildFinished) -> None:
    st = run.s.steps.get(event.path)
    if st is None or event.path not in run.s.active or st.phase not in ("child", "child-wait"):
        return
    st.status = "running"
    if event.status == "completed":
        run.succeed(st, event.output)
        return
    error = event.error or {
        "type": "ChildFailed",
        "message": f"the child workflow ended {event.status}",
    }
    message = f"subworkflow {event.path!r} ended {event.status}: {error.get('message')}"
    run.fail(st, {"type": "SubworkflowFailed", "message": message, "child": error}, retry=False)
