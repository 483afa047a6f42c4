"""The instance's own transitions: start, cancel, and the retry of a failed instance."""

from __future__ import annotations

from datetime import timedelta

from statemachine.definition import models
from statemachine.runtime import paths
from statemachine.runtime.flowbase import FlowBase
from statemachine.runtime.state import StepState
from statemachine.vocabulary import InstanceStatus, Phase, StepStatus, error_info

# a container a retry does not go into: it ended otherwise than by a failure it may resume
_RESUMABLE_CONTAINER = frozenset({StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.RUNNING})


class Lifecycle(FlowBase):
    """Starting, cancelling and retrying the instance."""

    def start(self) -> None:
        if self.state.status != InstanceStatus.PENDING:
            return
        self.state.status = InstanceStatus.RUNNING
        self.state.started_at = self.now
        if self.definition.timeout is not None:
            self.state.deadline = self.now + timedelta(seconds=self.definition.timeout)
        self.start_scope(self.plan.top, None)

    def cancel(self, reason: str) -> None:
        if self.terminal:
            return
        self.queue.clear()
        self.cancel_active(reason)
        self.finish_workflow(InstanceStatus.CANCELLED, error=error_info("Cancelled", reason))

    def retry(self) -> None:
        """A failed instance goes on: steps undone by compensation run again first (in the
        order they first completed), then the failed and cancelled steps are resumed."""
        state = self.state
        if state.status != InstanceStatus.FAILED:
            return
        state.status, state.error = InstanceStatus.RUNNING, None
        state.completed_at, state.output = None, None
        if not self.redo_compensated():
            self.resume_failed()

    def resumable(self, path: str) -> bool:
        """A failed or cancelled step a retry continues from: no enclosing step is done with it."""
        for container, _ in paths.ancestors(path):
            parent = self.state.peek(container)
            if parent is None:
                return False
            if parent.status == StepStatus.FAILED and parent.handled:
                return False
            if parent.status not in _RESUMABLE_CONTAINER:
                return False
        return True

    def resume_failed(self) -> None:
        """Continue from every failed (not handled) and cancelled step a retry can resume."""
        found = [
            self.state.edit(st.path)  # these records change below
            for st in list(self.state.steps.values())
            if (
                (st.status == StepStatus.FAILED and not st.handled)
                or st.status == StepStatus.CANCELLED
            )
            and not paths.is_compensation(st.path)  # an undo that failed is not to resume
            and self.resumable(st.path)
        ]
        containers = sorted(
            (st for st in found if models.child_branches(self.plan.node(st.path).step)),
            key=lambda st: st.path.count("/"),
        )
        leaves = [st for st in found if not models.child_branches(self.plan.node(st.path).step)]
        for parent in containers:
            self.reopen(parent)
        for st in leaves:
            st.status, st.attempts, st.error = StepStatus.PENDING, 0, None
            st.phase, st.wake_at = Phase.NONE, None
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

    def reopen(self, parent: StepState) -> None:
        """A failed parallel or map runs again: its failed branches are running once more."""
        parent.status, parent.phase = StepStatus.RUNNING, Phase.BRANCHES
        parent.error, parent.completed_at = None, None
        self.touch(parent)
        self.activate(parent.path)
        results = self.state.branches.setdefault(parent.path, {})
        for name, result in list(results.items()):
            if result.get("status") == StepStatus.FAILED:
                kept = {k: v for k, v in result.items() if k != "error"}
                results[name] = {**kept, "status": StepStatus.RUNNING}
