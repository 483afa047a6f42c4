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
        undone = run.s.steps[base_path(st.path)]
        undone.status = "compensated"  # no longer completed: a retry runs it again
        run.touch(undone)
        run.s.redo.insert(0, undone.path)  # undone newest first: redone oldest first
        run.log("workflow.step.compensated", undone.path, compensation=st.path)
    st.phase, st.wake_at, st.completed_at = "", None, run.now
    run.touch(st)
    run.deactivate(st.path)
    run.next_compensation()


# -- retry after compensation -------------------------------------------------------------
# A retry runs the steps compensation undid again, one at a time in the order they had
# completed, with the input they had, each as a new iteration (a new idempotency key: the old
# booking was cancelled); then the failed steps resume. ``State.redo`` lists the steps still
# undone, in that order: compensation puts each in front as it undoes it (newest first), a
# redone step leaves it, and one whose redo failed stays first for the next retry.
REDO = "redo"  # work queue kinds (``FlowRun.drain``), deferred by a pause like any other
RESUME = "resume"
REDO_KINDS = frozenset({REDO, RESUME})


def redo_compensated(run: FlowRun) -> bool:
    """Queue the first undone step to run again; False if nothing was undone."""
    if run.s.redo:
        run.queue.append((REDO, run.s.redo[0], None))
    return bool(run.s.redo)


def redo_work(run: FlowRun, kind: str, path: str) -> None:
    if kind == RESUME:
        run.resume_failed()
        return
    done = run.s.peek(path)
    node = run.plan.node(path)
    assert done is not None and isinstance(node.step, models.TaskStep)
    st = run.new_state(path, None)
    run.run_task(st, node.step, jsondata.copy_json(done.input))


def redone(run: FlowRun, st: StepState) -> bool:
    """True if ``st`` was run again by a retry: the next one runs, or the failed steps resume."""
    if not run.s.redo or run.s.redo[0] != st.path:
        return False
    run.s.redo.pop(0)
    undo = run.s.peek(compensation_path(st.path))  # its input: the output that was undone
    if undo is not None:
        _branch_follows(run, st.path, undo.input, st.output)
    if run.s.redo:
        run.queue.append((REDO, run.s.redo[0], None))
    else:  # (a step's path, so that a DAG scope does not finish meanwhile: ``queued_in``)
        run.queue.append((RESUME, st.path, None))
    return True


def _branch_follows(run: FlowRun, path: str, old: Any, new: Any) -> None:
    """A redone step whose old output was its parallel branch's result (the branch's last
    step, or a leaf of a DAG branch): the branch's recorded result, and the parallel's output
    if it had completed, take the new one."""
    parts = path.split("/")
    if len(parts) < 3 or "@" in parts[-2]:  # not in a parallel branch (a map item's is its own)
        return
    container, branch, name = "/".join(parts[:-2]), parts[-2], parts[-1]
    record = run.s.branches.get(container, {}).get(branch)
    if record is None or record.get("status") != "completed":
        return
    out = record.get("output")
    if out == old:
        fixed = new
    elif isinstance(out, dict) and name in out and out[name] == old:
        fixed = {**out, name: new}
    else:
        return
    record["output"] = fixed
    parent = run.s.peek(container)
    if parent is None or parent.status != "completed" or not isinstance(parent.output, dict):
        return
    done = run.s.steps[container]
    step = run.plan.node(container).step
    if isinstance(step, models.ParallelStep) and step.mode == "race":  # the race it won
        done.output = {**done.output, "value": fixed}
    elif done.output.get(branch) == out:
        done.output = {**done.output, branch: fixed}
    run.touch(done)


def redo_failed(run: FlowRun, st: StepState, error: dict[str, Any]) -> bool:
    """A step run again by a retry failed for good: the instance fails again (compensating
    what was redone so far), whatever its ``on_error``; the next retry redoes it first."""
    if not run.s.redo or run.s.redo[0] != st.path:
        return False
    run.scope_failed(run.plan.top, error)
    return True


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
