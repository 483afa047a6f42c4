"""The functional core: (definition, state, event, now) -> new state, history, work to do.

No I/O here. Handlers are not run: a task or poll check that must run is left ``running`` in the
state and the executor picks it up (also after a crash, which is how recovery works). Choice and
loop conditions, pass transforms and input mappers are evaluated here: they must be pure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from statemachine.definition import expressions, models
from statemachine.runtime import flowctx
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State, StepState

FINISHED = frozenset({"completed", "failed", "skipped", "cancelled"})


@dataclass
class Start:
    pass


@dataclass
class StepSucceeded:
    path: str
    output: Any


@dataclass
class StepFailed:
    path: str
    error: dict[str, Any]
    retryable: bool = True


@dataclass
class Tick:
    """Time passed: fire every timer that is due."""


@dataclass
class EventArrived:
    name: str
    data: Any


@dataclass
class Cancel:
    reason: str = "cancelled"


@dataclass
class Retry:
    """Continue a failed instance from its failed step(s); completed steps stay completed."""


Event = Start | StepSucceeded | StepFailed | Tick | EventArrived | Cancel | Retry


@dataclass
class HistoryItem:
    type: str
    step: str | None
    data: dict[str, Any]


@dataclass
class Decision:
    state: State
    history: list[HistoryItem] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    consumed_event: bool = False

    def runnable(self, plan: plans.Plan) -> list[str]:
        """Steps whose handler must run now (tasks and poll checks left ``running``)."""
        out = []
        for path in self.state.active:
            st = self.state.steps.get(path)
            if st and st.status == "running" and st.phase == "run":
                out.append(path)
        return out


class _Run:
    def __init__(self, plan: plans.Plan, state: State, now: datetime, instance_id: str) -> None:
        self.plan = plan
        self.definition = plan.definition
        self.s = state
        self.now = now
        self.instance_id = instance_id
        self.d = Decision(state)

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

    # -- entering steps ----------------------------------------------------------------
    def enter(self, path: str, prev: str | None) -> None:
        node = self.plan.node(path)
        step = node.step
        old = self.s.steps.get(path)
        st = StepState(path=path, prev=prev, iteration=self.s.loops.get(_loop_key(node), 0))
        if old is not None and old.iteration == st.iteration and old.status == "pending":
            st.attempts = old.attempts
        self.s.steps[path] = st
        self.touch(st)
        self.activate(path)
        st.started_at = self.now
        self.log("workflow.step.started", path, iteration=st.iteration)
        if step.delay:
            st.status, st.phase, st.wake_at = (
                "waiting",
                "delay",
                self.now + timedelta(seconds=step.delay),
            )
            return
        self.begin(st, node)

    def begin(self, st: StepState, node: plans.Node) -> None:
        step = node.step
        view = self.view(st.path, st.prev)
        if isinstance(step, models.TaskStep | models.PollStep):
            st.input = flowctx.task_input(step, view)
            st.status, st.phase, st.wake_at = "running", "run", None
            st.attempts += 1
            if (
                isinstance(step, models.PollStep)
                and step.timeout is not None
                and st.deadline is None
            ):
                st.deadline = self.now + timedelta(seconds=step.timeout)
        elif isinstance(step, models.PassStep):
            self.succeed(st, flowctx.pass_output(step, view))
        elif isinstance(step, models.ChoiceStep):
            target = flowctx.choose(step, view)
            if target is None:
                self.fail(
                    st,
                    {
                        "type": "NoChoiceMatched",
                        "message": f"no choice of {st.path!r} matched and it has no default",
                    },
                )
                return
            self.succeed(st, view.prev, goto=self.plan.sibling(node, target))
        elif isinstance(step, models.WaitStep):
            self.begin_wait(st, step, view)
        elif isinstance(step, models.LoopStep):
            self.loop(st, node, view)
        elif isinstance(step, models.ParallelStep):
            st.status, st.phase = "running", "branches"
            self.s.branches[st.path] = {}
            for scope in self.plan.branch_scopes(st.path):
                for root in self.plan.roots(scope):
                    self.enter(root, st.prev)
        else:
            self.fail(
                st,
                {"type": "NotSupported", "message": f"{step.kind} steps are not supported yet"},
                retry=False,
            )

    def begin_wait(self, st: StepState, step: models.WaitStep, view: flowctx.FlowView) -> None:
        st.status = "waiting"
        if step.event:
            st.phase, st.event = "event", step.event
            if step.timeout is not None:
                st.deadline = self.now + timedelta(seconds=step.timeout)
            return
        st.phase = "timer"
        if step.duration is not None:
            st.wake_at = self.now + timedelta(seconds=step.duration)
        else:
            st.wake_at = flowctx.until(step, view)

    def loop(self, st: StepState, node: plans.Node, view: flowctx.FlowView) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        key = _loop_key(node)
        first = self.s.steps.get(f"{st.path}#first")
        if flowctx.condition(step.condition, view, what=f"loop {st.path!r}"):
            count = self.s.loops.get(node.scope.prefix + step.target, 0) + 1
            started = first.started_at if first and first.started_at else self.now
            if first is None:
                self.s.steps[f"{st.path}#first"] = StepState(
                    path=f"{st.path}#first", status="internal", started_at=self.now
                )
            if step.max_iterations is not None and count > step.max_iterations:
                self.fail(
                    st,
                    {
                        "type": "StepTimeoutError",
                        "message": f"loop {st.path!r} exceeded {step.max_iterations} iterations",
                    },
                    retry=False,
                )
                return
            if step.timeout is not None and self.now >= started + timedelta(seconds=step.timeout):
                self.fail(
                    st,
                    {
                        "type": "StepTimeoutError",
                        "message": f"loop {st.path!r} exceeded its timeout",
                    },
                    retry=False,
                )
                return
            self.s.loops[node.scope.prefix + step.target] = count
            self.log("workflow.step.loop", st.path, iteration=count, target=step.target)
            if step.interval:
                st.status, st.phase, st.wake_at = (
                    "waiting",
                    "loop",
                    self.now + timedelta(seconds=step.interval),
                )
                return
            self.jump(st, node)
        else:
            self.s.steps.pop(f"{st.path}#first", None)
            self.s.loops.pop(node.scope.prefix + step.target, None)
            del key
            self.succeed(st, view.prev)

    def jump(self, st: StepState, node: plans.Node) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        st.status, st.phase, st.wake_at = "completed", "", None
        st.completed_at = self.now
        self.deactivate(st.path)
        self.enter(self.plan.sibling(node, step.target), st.prev)

    # -- finishing steps ---------------------------------------------------------------
    def succeed(self, st: StepState, output: Any, goto: str | None = None) -> None:
        st.status, st.phase, st.output, st.error, st.wake_at = "completed", "", output, None, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        self.s.order.append(st.path)
        self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
        if "/" not in st.path:
            done = sum(
                1
                for s in self.definition.steps
                if self.s.steps.get(s.name, StepState("")).status in FINISHED
            )
            self.log(
                "workflow.progress",
                st.path,
                progress=min(100, round(100 * done / max(1, len(self.definition.steps)))),
            )
        self.advance(st, goto)

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
        if step.on_error == "continue":
            st.handled = True
            self.advance(st, None, output={"error": error})
        elif step.on_error == "branch" and step.error_next:
            st.handled = True
            self.enter(self.plan.sibling(node, step.error_next), st.path)
        else:
            self.scope_failed(node.scope, error)

    def skip(self, path: str, reason: dict[str, Any]) -> None:
        st = self.s.step(path)
        st.status, st.completed_at = "skipped", self.now
        self.touch(st)
        self.log("workflow.step.skipped", path, **reason)
        self.advance(st, None)

    # -- flow --------------------------------------------------------------------------
    def advance(self, st: StepState, goto: str | None, output: Any = None) -> None:
        node = self.plan.node(st.path)
        scope = node.scope
        if scope.dag:
            for name in scope.dependents.get(node.step.name, ()):
                self.consider(scope.prefix + name)
            self.maybe_finish_dag(scope)
            return
        target = goto if goto is not None else self.plan.next_of(node)
        if target is not None:
            self.enter(target, st.path)
        else:
            self.scope_done(scope, st.output if st.status == "completed" else output)

    def consider(self, path: str) -> None:
        """A DAG step whose dependencies may now all be finished: run it, or skip it and say why."""
        node = self.plan.node(path)
        st = self.s.steps.get(path)
        if st is not None and st.status != "pending":
            return
        deps = [self.s.steps.get(node.scope.prefix + d) for d in node.step.depends_on]
        if any(d is None or d.status not in FINISHED for d in deps):
            return
        statuses = [_rule_status(d) for d in deps if d is not None]
        rule = node.step.trigger
        if not flowctx.trigger_ok(rule, statuses):
            self.skip(
                path,
                {
                    "reason": "trigger_rule",
                    "rule": rule,
                    "dependencies": dict(zip(node.step.depends_on, statuses, strict=True)),
                },
            )
            return
        if node.step.condition is not None:
            view = self.view(path, None)
            ok, values = flowctx.condition_with_values(
                node.step.condition, view, what=f"condition of {path!r}"
            )
            if not ok:
                self.skip(
                    path,
                    {
                        "reason": "condition",
                        "condition": flowctx.describe(node.step.condition),
                        "values": values,
                    },
                )
                return
        self.enter(
            path, node.scope.prefix + node.step.depends_on[-1] if node.step.depends_on else None
        )

    def maybe_finish_dag(self, scope: plans.Scope) -> None:
        if any(
            p.startswith(scope.prefix) and "/" not in p[len(scope.prefix) :] for p in self.s.active
        ):
            return
        for step in scope.steps:
            st = self.s.steps.get(scope.prefix + step.name)
            if st is None or st.status not in FINISHED:
                if step.name in scope.handlers:
                    continue
                return
        failed = [
            self.s.steps[scope.prefix + s.name]
            for s in scope.steps
            if (x := self.s.steps.get(scope.prefix + s.name))
            and x.status == "failed"
            and not x.handled
        ]
        if failed:
            self.scope_failed(scope, failed[0].error or {})
            return
        output = {
            name: self.s.steps[scope.prefix + name].output
            for name in scope.leaves
            if (x := self.s.steps.get(scope.prefix + name)) and x.status == "completed"
        }
        self.scope_done(scope, output)

    def scope_done(self, scope: plans.Scope, output: Any) -> None:
        if scope.parent is None:
            self.finish_workflow("completed", output=output)
            return
        parent = self.s.step(scope.parent)
        if parent.status != "running":
            return
        step = self.plan.node(scope.parent).step
        assert isinstance(step, models.ParallelStep) and scope.branch is not None
        results = self.s.branches.setdefault(scope.parent, {})
        results[scope.branch] = {"status": "completed", "output": output}
        if step.mode == "race":
            self.cancel_branches(scope.parent, keep=None)
            self.succeed(parent, {"winner": scope.branch, "value": output})
            return
        self.maybe_join(parent, step)

    def scope_failed(self, scope: plans.Scope, error: dict[str, Any]) -> None:
        if scope.parent is None:
            self.cancel_active("failed")
            self.finish_workflow("failed", error=error)
            return
        parent = self.s.step(scope.parent)
        if parent.status != "running":
            return
        step = self.plan.node(scope.parent).step
        assert isinstance(step, models.ParallelStep) and scope.branch is not None
        self.s.branches.setdefault(scope.parent, {})[scope.branch] = {
            "status": "failed",
            "error": error,
        }
        if step.failure == "fail-fast" or step.mode == "race":
            self.cancel_branches(scope.parent, keep=None)
            self.fail(
                parent,
                {
                    "type": "BranchFailed",
                    "message": f"branch {scope.branch!r} failed: {error.get('message')}",
                    "errors": [error],
                },
                retry=False,
            )
            return
        self.maybe_join(parent, step)

    def maybe_join(self, parent: StepState, step: models.ParallelStep) -> None:
        results = self.s.branches.get(parent.path, {})
        if len(results) < len(step.branches):
            return
        errors_ = [r["error"] for r in results.values() if r["status"] == "failed"]
        if errors_:
            msg = "; ".join(str(e.get("message")) for e in errors_)
            self.fail(
                parent, {"type": "BranchFailed", "message": msg, "errors": errors_}, retry=False
            )
        else:
            self.succeed(parent, {b.name: results[b.name]["output"] for b in step.branches})

    def cancel_branches(self, parallel: str, keep: str | None) -> None:
        prefix = parallel + "/"
        for path in [p for p in self.s.active if p.startswith(prefix)]:
            st = self.s.step(path)
            st.status, st.phase, st.wake_at, st.completed_at = "cancelled", "", None, self.now
            self.touch(st)
            self.deactivate(path)
            self.log("workflow.step.cancelled", path)

    def cancel_active(self, reason: str) -> None:
        for path in list(self.s.active):
            st = self.s.step(path)
            if st.status in ("running", "waiting", "pending"):
                st.status, st.phase, st.wake_at, st.completed_at = "cancelled", "", None, self.now
                self.touch(st)
                self.log("workflow.step.cancelled", path, reason=reason)
            self.deactivate(path)

    def finish_workflow(
        self, status: str, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        self.s.status = status
        self.s.output, self.s.error = output, error
        self.s.completed_at = self.now
        data: dict[str, Any] = {"output": output} if status == "completed" else {"error": error}
        self.log(f"workflow.{status}", None, **data)

    # -- events ------------------------------------------------------------------------
    def retry(self) -> None:
        failed = [st for st in self.s.steps.values() if st.status == "failed" and not st.handled]
        containers = {
            st.path for st in failed if models.child_branches(self.plan.node(st.path).step)
        }
        leaves = [st for st in failed if st.path not in containers]
        self.s.status, self.s.error, self.s.completed_at, self.s.output = (
            "running",
            None,
            None,
            None,
        )
        for path in sorted(containers):
            parent = self.s.step(path)
            parent.status, parent.phase, parent.error, parent.completed_at = (
                "running",
                "branches",
                None,
                None,
            )
            self.touch(parent)
            self.activate(path)
            results = self.s.branches.get(path, {})
            for branch, result in list(results.items()):
                if result.get("status") == "failed":
                    del results[branch]
        for st in leaves:
            st.attempts = 0
            st.status = "pending"
            self.enter(st.path, st.prev)
        for path in sorted(containers):
            # branches cancelled by fail-fast start again from their cancelled steps
            for st in list(self.s.steps.values()):
                if st.path.startswith(path + "/") and st.status == "cancelled":
                    st.status = "pending"
                    self.enter(st.path, st.prev)

    def start(self) -> None:
        self.s.status = "running"
        self.s.started_at = self.now
        if self.definition.timeout is not None:
            self.s.deadline = self.now + timedelta(seconds=self.definition.timeout)
        for root in self.plan.roots(self.plan.top):
            self.enter(root, None)

    def tick(self) -> None:
        if (
            self.s.deadline is not None
            and self.now >= self.s.deadline
            and self.s.status not in FINISHED
        ):
            self.cancel_active("timed_out")
            self.finish_workflow(
                "timed_out",
                error={"type": "WorkflowTimeout", "message": "the workflow exceeded its timeout"},
            )
            return
        for path in list(self.s.active):
            if self.s.status not in ("running", "waiting"):
                return
            st = self.s.steps.get(path)
            if st is None or path not in self.s.active:
                continue
            if st.phase == "event" and st.deadline is not None and self.now >= st.deadline:
                self.fail(
                    st,
                    {
                        "type": "StepTimeoutError",
                        "message": f"no event {st.event!r} within the timeout",
                    },
                    retry=False,
                )
            elif st.phase == "poll" and st.deadline is not None and self.now >= st.deadline:
                self.fail(
                    st,
                    {"type": "StepTimeoutError", "message": f"poll {path!r} timed out"},
                    retry=False,
                )
            elif st.wake_at is not None and self.now >= st.wake_at:
                self.wake(st)

    def wake(self, st: StepState) -> None:
        node = self.plan.node(st.path)
        phase, st.wake_at = st.phase, None
        self.touch(st)
        if phase == "delay":
            self.begin(st, node)
        elif phase in ("retry", "poll"):
            st.status, st.phase = "running", "run"
            st.attempts += 1
        elif phase == "timer":
            self.succeed(st, self.view(st.path, st.prev).prev)
        elif phase == "loop":
            self.jump(st, node)

    def succeeded(self, path: str, output: Any) -> None:
        st = self.s.steps.get(path)
        if st is None or st.status != "running" or path not in self.s.active:
            return  # a late result of a cancelled step
        step = self.plan.node(path).step
        if isinstance(step, models.PollStep):
            done, result = flowctx.poll_result(output)
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
        st = self.s.steps.get(path)
        if st is None or st.status != "running" or path not in self.s.active:
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


def _loop_key(node: plans.Node) -> str:
    return node.scope.prefix + node.step.name


def _rule_status(st: StepState) -> str:
    return "skipped" if st.status == "failed" and st.handled else st.status


Handler = Callable[..., Any]


def decide(
    plan: plans.Plan, state: State, event: Event, now: datetime, instance_id: str
) -> Decision:
    """Apply one event to a copy of ``state``; the input state is never modified."""
    run = _Run(plan, copy.deepcopy(state), now, instance_id)
    if isinstance(event, Start):
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
        run.cancel_active(event.reason)
        run.finish_workflow("cancelled", error={"type": "Cancelled", "message": event.reason})
    leaves = [
        run.s.steps[p]
        for p in run.s.active
        if p in run.s.steps and run.s.steps[p].phase != "branches"
    ]
    if run.s.status == "running" and leaves and all(st.status == "waiting" for st in leaves):
        run.s.status = "waiting"
    elif run.s.status == "waiting" and any(st.status == "running" for st in leaves):
        run.s.status = "running"
    return run.d


def next_wake(state: State) -> datetime | None:
    """When the instance next needs a worker: now-ish for running work, else its earliest timer."""
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


def expression_names() -> tuple[str, ...]:
    return ("input", "steps", "prev", "metadata", "event")


_ = expressions  # expressions are evaluated through flowctx
