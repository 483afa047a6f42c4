"""A runner's inbox: events that arrived for its waits, and the children of its subworkflow
steps (started here, run here at once, their ends delivered as events).

A part of ``InstanceRunner`` (runner.py); the fields it reads are declared in runner_core.py.
"""

from __future__ import annotations

from statemachine import errors
from statemachine.definition import models
from statemachine.engine import inputs
from statemachine.engine.runner_core import RunnerCore
from statemachine.runtime import interpreter as interp
from statemachine.runtime.state import TERMINAL


class Inbox(RunnerCore):
    async def start_children(self) -> bool:
        """Start (idempotently) the child of every subworkflow step that has none yet."""
        paths = interp.Decision(self.state).children()
        for path in paths:
            st = self.state.steps[path]
            step = self.plan.node(path).step
            assert isinstance(step, models.SubworkflowStep)
            cid = interp.child_id(self.rec.id, path, st.iteration)
            child = self.services.repo.get(cid)
            if child is None:
                try:
                    inputs.start(self.services, step.workflow, st.input, cid, parent_id=self.rec.id)
                except (
                    errors.StatemachineError
                ) as exc:  # unknown workflow, input failing its schema
                    error = {"type": type(exc).__name__, "message": str(exc)}
                    await self.apply(interp.ChildFinished(path, "failed", None, error))
                    continue
                await self.apply(interp.ChildStarted(path))
                if self.run_child is not None:  # run it here now; any worker could, later
                    await self.run_child(cid)
                continue
            elif (
                child.status == "failed"
                and child.completed_at
                and st.started_at
                and child.completed_at < st.started_at
            ):
                self.services.retry(cid)  # the parent is being retried: so is its failed child
            elif child.status in TERMINAL:
                await self.apply(
                    interp.ChildFinished(path, child.status, child.output, child.error)
                )
                continue
            await self.apply(interp.ChildStarted(path))
        return bool(paths)

    async def deliver_events(self) -> None:
        phases = {self.state.steps[p].phase for p in self.state.active if p in self.state.steps}
        if not phases & {"event", "child-wait", "child"}:
            return
        children = {
            interp.child_id(self.rec.id, p, self.state.steps[p].iteration): p
            for p in self.state.active
            if p in self.state.steps and self.state.steps[p].phase in ("child", "child-wait")
        }
        for ev in self.services.repo.pending_events(self.rec.id):
            if ev.name.startswith("child:"):
                path = children.get(ev.name[len("child:") :])
                if path is not None and isinstance(ev.data, dict):
                    finished = interp.ChildFinished(
                        path,
                        str(ev.data.get("status")),
                        ev.data.get("output"),
                        ev.data.get("error"),
                    )
                    await self.apply(finished, consume=[ev.id])
                continue
            waiting = [
                p
                for p in self.state.active
                if self.state.steps[p].phase == "event" and self.state.steps[p].event == ev.name
            ]
            if waiting:
                await self.apply(interp.EventArrived(ev.name, ev.data), consume=[ev.id])
