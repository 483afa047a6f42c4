"""Compensation (saga): undoing completed tasks when the instance fails, and doing them again
when a failed instance is retried."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from statemachine.definition import models
from statemachine.runtime import jsondata, retries
from statemachine.runtime.flowbase import FlowBase
from statemachine.runtime.paths import base_path, compensation_path, is_compensation
from statemachine.runtime.plan import Plan
from statemachine.runtime.state import State, StepState
from statemachine.vocabulary import InstanceStatus, Phase, StepStatus

# ``base_path`` and ``is_compensation`` (``paths``) are also read here by the runner
__all__ = ["REDO", "RESUME", "Saga", "base_path", "compensations", "is_compensation", "undoable"]

# -- retry after compensation -------------------------------------------------------------
# A retry runs the steps compensation undid again, one at a time in the order they had
# completed, with the input they had, each as a new iteration (a new idempotency key: the old
# booking was cancelled); then the failed steps resume. ``State.redo`` lists the steps still
# undone, in that order: compensation puts each in front as it undoes it (newest first), a
# redone step leaves it, and one whose redo failed stays first for the next retry.
REDO = "redo"  # work queue kinds (``FlowBase.drain``), deferred by a pause like any other
RESUME = "resume"


def undoable(plan: Plan, path: str) -> bool:
    """Whether the step at ``path`` is a task that declared ``compensate``."""
    node = plan.find(path)
    return (
        node is not None
        and isinstance(node.step, models.TaskStep)
        and node.step.compensate is not None
    )


def compensations(plan: Plan, state: State) -> list[str]:
    """Completed tasks that declared ``compensate``, newest completion first, each once
    (a state stored before ``note_completed`` kept one entry per completion)."""
    out: list[str] = []
    for path in reversed(state.order):
        if path in out or not undoable(plan, path):
            continue
        done = state.peek(path)
        if done is not None and done.status == StepStatus.COMPLETED:
            out.append(path)
    return out


class Saga(FlowBase):
    """Compensation of a failed instance, and the redo of what it undid on a retry."""

    def note_completed(self, st: StepState) -> None:
        """Note an undoable step's completion: ``State.order`` keeps each once, at its latest
        completion (the state column is rewritten on every commit, and a list of every
        completion grew with each loop pass, without bound)."""
        if undoable(self.plan, st.path):
            if st.path in self.state.order:
                self.state.order.remove(st.path)
            self.state.order.append(st.path)

    def fail_workflow(self, error: Mapping[str, Any]) -> None:
        """Fail, after undoing completed tasks that declared ``compensate`` (newest first)."""
        todo = compensations(self.plan, self.state)
        if not todo:
            self.finish_workflow(InstanceStatus.FAILED, error=error)
            return
        state = self.state
        state.status, state.error, state.compensations = (
            InstanceStatus.COMPENSATING,
            dict(error),
            todo,
        )
        self.log("workflow.compensating", None, steps=list(todo), error=state.error)
        self.next_compensation()

    def next_compensation(self) -> None:
        if not self.state.compensations:
            self.finish_workflow(InstanceStatus.FAILED, error=self.state.error)
            return
        path = self.state.compensations.pop(0)
        done = self.state.peek(path)
        assert done is not None
        st = StepState(
            path=compensation_path(path), status=StepStatus.RUNNING, phase=Phase.RUN, prev=path,
            input=jsondata.copy_json(done.output), attempts=1, iteration=done.iteration,
            started_at=self.now,
        )  # fmt: skip
        self.touch(self.state.put(st))
        self.activate(st.path)
        self.log("workflow.step.started", st.path, compensating=path)

    def compensation_done(
        self, st: StepState, output: Any, error: Mapping[str, Any] | None, retry: bool
    ) -> None:
        if error is not None:
            if self.compensation_failed(st, error, retry):
                return  # tried again later
        else:
            st.status, st.output = StepStatus.COMPLETED, output
            self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
            undone = self.state.edit(base_path(st.path))
            undone.status = StepStatus.COMPENSATED  # no longer completed: a retry runs it again
            self.touch(undone)
            self.state.redo.insert(0, undone.path)  # undone newest first: redone oldest first
            self.log("workflow.step.compensated", undone.path, compensation=st.path)
        st.phase, st.wake_at, st.completed_at = Phase.NONE, None, self.now
        self.touch(st)
        self.deactivate(st.path)
        self.next_compensation()

    def compensation_failed(self, st: StepState, error: Mapping[str, Any], retry: bool) -> bool:
        """Retry the compensation if its task's policy allows (True); else record its error
        with the instance's (``compensation_errors``): the next compensation runs."""
        policy = retries.policy_of(self.definition, self.plan.node(base_path(st.path)).step)
        failure = {**error, "step": st.path, "attempt": st.attempts}
        if retry and policy is not None and st.attempts < policy.max_attempts:
            delay = retries.delay(policy, st.attempts)
            st.status, st.phase, st.error = StepStatus.WAITING, Phase.RETRY, failure
            st.wake_at = self.now + timedelta(seconds=delay)
            self.touch(st)
            self.log(
                "workflow.step.retry", st.path, error=failure, attempt=st.attempts, delay=delay
            )
            return True
        st.status, st.error = StepStatus.FAILED, failure
        earlier = self.state.error or {}
        self.state.error = {
            **earlier,
            "compensation_errors": [*earlier.get("compensation_errors", []), failure],
        }
        self.log("workflow.step.failed", st.path, error=failure, attempt=st.attempts)
        return False

    # -- retry after compensation ---------------------------------------------------------
    def redo_compensated(self) -> bool:
        """Queue the first undone step to run again; False if nothing was undone."""
        if self.state.redo:
            self.queue.append((REDO, self.state.redo[0], None))
        return bool(self.state.redo)

    def redo_work(self, kind: str, path: str) -> None:
        if kind == RESUME:
            self.resume_failed()
            return
        assert kind == REDO, kind
        done = self.state.peek(path)
        node = self.plan.node(path)
        assert done is not None and isinstance(node.step, models.TaskStep)
        st = self.new_state(path, None)
        self.run_task(st, node.step, jsondata.copy_json(done.input))

    def redone(self, st: StepState) -> bool:
        if not self.state.redo or self.state.redo[0] != st.path:
            return False
        self.state.redo.pop(0)
        undo = self.state.peek(compensation_path(st.path))  # its input: the output undone
        if undo is not None:
            self.branch_follows(st.path, undo.input, st.output)
        if self.state.redo:
            self.queue.append((REDO, self.state.redo[0], None))
        else:  # (a step's path, so that a DAG scope does not finish meanwhile: ``queued_in``)
            self.queue.append((RESUME, st.path, None))
        return True

    def branch_follows(self, path: str, old: Any, new: Any) -> None:
        """A redone step whose old output was its parallel branch's result (the branch's last
        step, or a leaf of a DAG branch): the branch's recorded result, and the parallel's output
        if it had completed, take the new one."""
        parts = path.split("/")
        if len(parts) < 3 or "@" in parts[-2]:  # not in a parallel branch (an item has its own)
            return
        container, branch, name = "/".join(parts[:-2]), parts[-2], parts[-1]
        record = self.state.branches.get(container, {}).get(branch)
        if record is None or record.get("status") != StepStatus.COMPLETED:
            return
        out = record.get("output")
        if out == old:
            fixed = new
        elif isinstance(out, dict) and name in out and out[name] == old:
            fixed = {**out, name: new}
        else:
            return
        record["output"] = fixed
        parent = self.state.peek(container)
        if (
            parent is None
            or parent.status != StepStatus.COMPLETED
            or not isinstance(parent.output, dict)
        ):
            return
        done = self.state.edit(container)
        step = self.plan.node(container).step
        if isinstance(step, models.ParallelStep) and step.mode == "race":  # the race it won
            done.output = {**done.output, "value": fixed}
        elif done.output.get(branch) == out:
            done.output = {**done.output, branch: fixed}
        self.touch(done)

    def redo_failed(self, st: StepState, error: Mapping[str, Any]) -> bool:
        """A step run again by a retry failed for good: the instance fails again (compensating
        what was redone so far), whatever its ``on_error``; the next retry redoes it first."""
        if not self.state.redo or self.state.redo[0] != st.path:
            return False
        self.scope_failed(self.plan.top, error)
        return True
