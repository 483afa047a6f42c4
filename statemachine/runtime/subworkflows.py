"""Subworkflow steps: the child instance started, then ended."""

from __future__ import annotations

from statemachine.runtime.flowbase import FlowBase
from statemachine.runtime.transitions import ChildFinished
from statemachine.vocabulary import InstanceStatus, Phase, StepStatus, error_info

_CHILD_PHASES = frozenset({Phase.CHILD, Phase.CHILD_WAIT})


class Subworkflows(FlowBase):
    """A subworkflow step waits for its child instance and ends as the child did."""

    def child_started(self, path: str) -> None:
        found = self.state.peek(path)
        if (
            found is not None
            and path in self.state.active
            and found.status == StepStatus.RUNNING
            and found.phase == Phase.CHILD
        ):
            st = self.state.edit(path)
            st.status, st.phase = StepStatus.WAITING, Phase.CHILD_WAIT
            self.touch(st)

    def child_finished(self, event: ChildFinished) -> None:
        found = self.state.peek(event.path)
        if found is None or event.path not in self.state.active or found.phase not in _CHILD_PHASES:
            return
        st = self.state.edit(event.path)
        st.status = StepStatus.RUNNING
        if event.status == InstanceStatus.COMPLETED:
            self.succeed(st, event.output)
            return
        error = event.error or error_info("ChildFailed", f"the child workflow ended {event.status}")
        message = f"subworkflow {event.path!r} ended {event.status}: {error.get('message')}"
        self.fail(st, {**error_info("SubworkflowFailed", message), "child": error}, retry=False)
