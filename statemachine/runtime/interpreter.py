"""The functional core: (definition, state, event, now) -> new state, history, work to do.

No I/O here. Handlers are not run: a task or poll check that must run is left ``running`` in the
state and the executor picks it up (also after a crash, which is how recovery works). Choice and
loop conditions, pass transforms and input mappers are evaluated here: they must be pure. When
one of them fails (``ExpressionError``), the step it belongs to fails, without retries, and its
``on_error`` applies.

Flow is driven by a work queue rather than by recursion: entering the step after a finished one
(and re-checking a DAG step whose dependency finished) is queued and drained before ``decide``
returns, so a long chain of pure steps or a loop over pure steps cannot exhaust the stack.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from statemachine import errors
from statemachine.definition import expressions, models
from statemachine.runtime import flowctx, saga
from statemachine.runtime import plan as plans
from statemachine.runtime.state import State, StepState
from statemachine.runtime.transitions import (
    Cancel,
    ChildFinished,
    ChildStarted,
    Decision,
    Event,
    EventArrived,
    HistoryItem,
    Retry,
    Start,
    StepFailed,
    StepSucceeded,
    Tick,
    child_id,
)

__all__ = [
    "Cancel",
    "ChildFinished",
    "ChildStarted",
    "Decision",
    "Event",
    "EventArrived",
    "HistoryItem",
    "Retry",
    "Start",
    "StepFailed",
    "StepSucceeded",
    "Tick",
    "child_id",
    "decide",
    "next_wake",
]

FINISHED = frozenset({"completed", "failed", "skipped", "cancelled"})
TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})
# Steps entered in one decision before the instance is failed as making no progress (a loop
# over pure steps whose condition never turns false, with no interval and only a timeout).
MAX_ENTERS_PER_DECISION = 10_000


def _ancestors(path: str) -> Iterator[tuple[str, str]]:
    """(container path, branch name) of every parallel/map enclosing ``path``, outermost first."""
    parts = path.split("/")
    for i in range(1, len(parts) - 1, 2):
        yield "/".join(parts[:i]), parts[i]


def _expression_error(exc: errors.ExpressionError) -> dict[str, Any]:
    return {"type": "ExpressionError", "message": str(exc)}


class _Run:
    def __init__(self, plan: plans.Plan, state: State, now: datetime, instance_id: str) -> None:
        self.plan = plan
        self.definition = plan.definition
        self.s = state
        self.now = now
        self.instance_id = instance_id
        self.d = Decision(state)
        # ("enter", path, prev) or ("consider", path, None), drained by ``drain``
        self.queue: deque[tuple[str, str, str | None]] = deque()
        self.entered = 0

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

    @property
    def terminal(self) -> bool:
        return self.s.status in TERMINAL

    def alive(self, path: str) -> bool:
        """Whether a step at ``path`` may still start: the instance and every enclosing branch run."""
        if self.terminal:
            return False
        for container, branch in _ancestors(path):
            parent = self.s.steps.get(container)
            if parent is None or parent.status != "running":
                return False
            result = self.s.branches.get(container, {}).get(branch)
            if result is None or result.get("status") != "running":
                return False
        return True

    def scope_alive(self, scope: plans.Scope) -> bool:
        return self.alive(scope.prefix + (scope.steps[0].name if scope.steps else "_"))

    # -- the work queue ----------------------------------------------------------------
    def schedule_enter(self, path: str, prev: str | None) -> None:
        self.queue.append(("enter", path, prev))

    def schedule_consider(self, path: str) -> None:
        if ("consider", path, None) not in self.queue:
            self.queue.append(("consider", path, None))

    def queued_in(self, scope: plans.Scope) -> bool:
        return any(self.plan.node(path).scope is scope for _, path, _ in self.queue)

    def drain(self) -> None:
        if self.s.status == "paused":  # no new step starts while paused: resume enters them
            self.s.deferred.extend([kind, path, prev] for kind, path, prev in self.queue)
            self.queue.clear()
            return
        if self.s.deferred and self.s.status in ("running", "waiting"):
            self.queue.extend((str(k), str(p), v) for k, p, v in self.s.deferred)
            self.s.deferred.clear()
        while self.queue:
            kind, path, prev = self.queue.popleft()
            self.entered += 1
            if self.entered > MAX_ENTERS_PER_DECISION:
                self.queue.clear()
                self.give_up()
                return
            if kind == "consider":
                if self.alive(path):
                    self.consider(path)
                    self.maybe_finish_dag(self.plan.node(path).scope)
            elif self.alive(path):
                self.enter(path, prev)
            elif not self.terminal or self.s.status == "failed":
                # its scope ended meanwhile (a race was won, a sibling failed): record the step
                # as cancelled so that a retry of the instance resumes from it
                self.cancelled_before_start(path, prev)

    def give_up(self) -> None:
        self.cancel_active("failed")
        self.finish_workflow(
            "failed",
            error={
                "type": "NoProgress",
                "message": f"more than {MAX_ENTERS_PER_DECISION} steps ran without waiting for "
                "anything; a loop over pure steps needs an interval, a task or a reachable end",
            },
        )

    def cancelled_before_start(self, path: str, prev: str | None) -> None:
        old = self.s.steps.get(path)
        iteration = 0 if old is None else old.iteration + (old.status != "pending")
        st = StepState(path=path, status="cancelled", prev=prev, iteration=iteration)
        st.completed_at = self.now
        self.s.steps[path] = st
        self.touch(st)
        self.log("workflow.step.cancelled", path, reason="not started")

    # -- entering steps ----------------------------------------------------------------
    def new_state(self, path: str, prev: str | None) -> StepState:
        """A fresh attempt record; a step entered again (loop, choice) counts one more iteration."""
        old = self.s.steps.get(path)
        if old is None:
            iteration = 0
        elif old.status == "pending":  # reset for a retry or a DAG restart: same iteration
            iteration = old.iteration
        else:
            iteration = old.iteration + 1
        st = StepState(path=path, prev=prev, iteration=iteration, started_at=self.now)
        self.s.steps[path] = st
        self.touch(st)
        self.activate(path)
        self.log("workflow.step.started", path, iteration=st.iteration)
        return st

    def enter(self, path: str, prev: str | None) -> None:
        node = self.plan.node(path)
        step = node.step
        if step.condition is not None and not isinstance(step, models.LoopStep):
            try:
                ok, values = flowctx.condition_with_values(
                    step.condition, self.view(path, prev), what=f"condition of {path!r}"
                )
            except errors.ExpressionError as exc:
                self.fail(self.new_state(path, prev), _expression_error(exc), retry=False)
                return
            if not ok:
                reason = {
                    "reason": "condition",
                    "condition": flowctx.describe(step.condition),
                    "values": values,
                }
                self.skip(path, prev, reason)
                return
        st = self.new_state(path, prev)
        if step.delay:
            st.status, st.phase = "waiting", "delay"
            st.wake_at = self.now + timedelta(seconds=step.delay)
            return
        self.begin(st, node)

    def begin(self, st: StepState, node: plans.Node) -> None:
        step = node.step
        value: Any = None
        try:
            view = self.view(st.path, st.prev)
            if isinstance(step, models.TaskStep | models.PollStep | models.SubworkflowStep):
                value = flowctx.task_input(step, view)
            elif isinstance(step, models.PassStep):
                value = flowctx.pass_output(step, view)
            elif isinstance(step, models.ChoiceStep):
                value = flowctx.choose(step, view)
            elif isinstance(step, models.WaitStep):
                if not step.event and step.duration is None:
                    value = flowctx.until(step, view)
            elif isinstance(step, models.LoopStep):
                value = flowctx.condition(step.condition, view, what=f"loop {st.path!r}")
            elif isinstance(step, models.MapStep):
                value = flowctx.map_items(step, view)
        except errors.ExpressionError as exc:
            if isinstance(step, models.LoopStep):
                self.end_loop(st.path, node)
            self.fail(st, _expression_error(exc), retry=False)
            return
        if isinstance(step, models.TaskStep | models.PollStep):
            st.input = value
            st.status, st.phase, st.wake_at = "running", "run", None
            st.attempts += 1
            if isinstance(step, models.PollStep) and step.timeout is not None:
                st.deadline = self.now + timedelta(seconds=step.timeout)
        elif isinstance(step, models.SubworkflowStep):
            st.input = value
            st.status, st.phase, st.wake_at = "running", "child", None
            st.attempts += 1
        elif isinstance(step, models.PassStep):
            self.succeed(st, value)
        elif isinstance(step, models.ChoiceStep):
            if value is None:
                self.fail(
                    st,
                    {
                        "type": "NoChoiceMatched",
                        "message": f"no choice of {st.path!r} matched and it has no default",
                    },
                    retry=False,
                )
                return
            self.succeed(st, copy.deepcopy(view.prev), goto=self.plan.sibling(node, value))
        elif isinstance(step, models.WaitStep):
            self.begin_wait(st, step, value)
        elif isinstance(step, models.LoopStep):
            self.loop(st, node, view, bool(value))
        elif isinstance(step, models.ParallelStep):
            st.status, st.phase = "running", "branches"
            self.s.branches[st.path] = {}
            self.start_branches(st, step)
            if not step.branches:
                self.maybe_join(st, step)
        elif isinstance(step, models.MapStep):
            st.status, st.phase = "running", "branches"
            self.s.branches[st.path] = {
                step.iterator.name: {"status": "running", "items": value, "index": 0, "results": []}
            }
            self.next_item(st, step)

    def start_scope(self, scope: plans.Scope, prev: str | None) -> None:
        """Start a scope: its first step, or every DAG root (whose conditions are checked).

        A scope started again (a loop around a parallel, the next item of a map) starts from
        scratch: results of its previous round become ``pending`` one iteration later.
        """
        for step in scope.steps:
            old = self.s.steps.get(scope.prefix + step.name)
            if old is not None and old.status != "pending":
                fresh = StepState(path=old.path, status="pending", iteration=old.iteration + 1)
                self.s.steps[old.path] = fresh
                self.touch(fresh)
        if scope.dag:
            for root in self.plan.roots(scope):
                self.schedule_consider(root)
        elif scope.steps:
            self.schedule_enter(scope.prefix + scope.steps[0].name, prev)
        else:  # validation refuses empty branches; pass the input through all the same
            self.scope_done(scope, flowctx.prev_value(self.s, prev))

    def start_branches(self, parent: StepState, step: models.ParallelStep) -> None:
        """Start branches not started yet, up to ``max_concurrency`` running at once."""
        results = self.s.branches.setdefault(parent.path, {})
        limit = step.max_concurrency or len(step.branches)
        running = sum(1 for r in results.values() if r.get("status") == "running")
        for br in step.branches:
            if running >= limit:
                break
            if br.name in results:
                continue
            results[br.name] = {"status": "running"}
            running += 1
            self.start_scope(self.plan.scopes[f"{parent.path}/{br.name}/"], parent.prev)

    def next_item(self, parent: StepState, step: models.MapStep) -> None:
        """Run the iterator on the next item, or finish the map with every result in order.

        Items run one after the other: an item's steps sit at the plain paths
        (``map/iterator/step``), each item one more iteration of them.
        """
        record = self.s.branches[parent.path][step.iterator.name]
        index = record["index"]
        if index >= len(record["items"]):
            record["status"] = "completed"
            self.succeed(parent, list(record["results"]))
            return
        self.start_scope(self.plan.scopes[f"{parent.path}/{step.iterator.name}/"], None)

    def begin_wait(self, st: StepState, step: models.WaitStep, until: Any) -> None:
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
            st.wake_at = until

    def loop(self, st: StepState, node: plans.Node, view: flowctx.FlowView, holds: bool) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        key = node.scope.prefix + step.target
        if not holds:
            self.end_loop(st.path, node)
            self.succeed(st, copy.deepcopy(view.prev))
            return
        started = self.s.loop_started.setdefault(st.path, self.now)
        count = self.s.loops.get(key, 0) + 1
        if step.max_iterations is not None and count > step.max_iterations:
            self.end_loop(st.path, node)
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
            self.end_loop(st.path, node)
            self.fail(
                st,
                {
                    "type": "StepTimeoutError",
                    "message": f"loop {st.path!r} exceeded its timeout of {step.timeout:g}s",
                },
                retry=False,
            )
            return
        self.s.loops[key] = count
        self.log("workflow.step.loop", st.path, iteration=count, target=step.target)
        if step.interval:
            st.status, st.phase = "waiting", "loop"
            st.wake_at = self.now + timedelta(seconds=step.interval)
            self.touch(st)
            return
        self.jump(st, node)

    def end_loop(self, path: str, node: plans.Node) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        self.s.loop_started.pop(path, None)
        self.s.loops.pop(node.scope.prefix + step.target, None)

    def jump(self, st: StepState, node: plans.Node) -> None:
        step = node.step
        assert isinstance(step, models.LoopStep)
        st.output = copy.deepcopy(self.view(st.path, st.prev).prev)  # what the loop passes on
        st.status, st.phase, st.wake_at = "completed", "", None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        target = self.plan.sibling(node, step.target)
        # the target sees what led to the loop; a loop on itself keeps its own predecessor
        self.schedule_enter(target, st.prev if target == st.path else st.path)

    # -- finishing steps ---------------------------------------------------------------
    def succeed(self, st: StepState, output: Any, goto: str | None = None) -> None:
        st.status, st.phase, st.output, st.error, st.wake_at = "completed", "", output, None, None
        st.completed_at = self.now
        self.touch(st)
        self.deactivate(st.path)
        self.s.order.append(st.path)
        self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
        if "/" not in st.path:
            self.log("workflow.progress", st.path, progress=self.progress())
        self.advance(st, goto)

    def progress(self) -> int:
        steps = self.definition.steps
        done = sum(
            1 for s in steps if (x := self.s.steps.get(s.name)) is not None and x.status in FINISHED
        )
        return min(100, round(100 * done / max(1, len(steps))))

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
            self.schedule_enter(self.plan.sibling(node, step.error_next), st.path)
            if node.scope.dag:  # its dependents see a handled failure (as if skipped)
                self.advance(st, None)
        else:
            self.scope_failed(node.scope, error)

    def skip(self, path: str, prev: str | None, reason: dict[str, Any]) -> None:
        old = self.s.steps.get(path)
        iteration = 0 if old is None else old.iteration + (old.status != "pending")
        st = StepState(path=path, status="skipped", prev=prev, iteration=iteration)
        st.completed_at = self.now
        self.s.steps[path] = st
        self.touch(st)
        self.deactivate(path)
        self.log("workflow.step.skipped", path, **reason)
        self.advance(st, None)

    # -- flow --------------------------------------------------------------------------
    def advance(self, st: StepState, goto: str | None, output: Any = None) -> None:
        node = self.plan.node(st.path)
        scope = node.scope
        if scope.dag:
            for name in scope.dependents.get(node.step.name, ()):
                self.schedule_consider(scope.prefix + name)
            self.maybe_finish_dag(scope)
            return
        target = goto if goto is not None else self.plan.next_of(node)
        skipped = st.status == "skipped"  # a skipped step passes its own input on
        if target is not None:
            self.schedule_enter(target, st.prev if skipped else st.path)
            return
        if st.status == "completed":
            output = st.output
        elif skipped:
            output = copy.deepcopy(self.view(st.path, st.prev).prev)
        self.scope_done(scope, output)

    def consider(self, path: str) -> None:
        """A DAG step whose dependencies may now all be finished: run it, or skip it and say why."""
        node = self.plan.node(path)
        st = self.s.steps.get(path)
        if st is not None and st.status != "pending":
            return
        prefix = node.scope.prefix
        depends_on = node.step.depends_on
        deps = [self.s.steps.get(prefix + d) for d in depends_on]
        statuses = [_rule_status(d) for d in deps if d is not None]
        if len(statuses) < len(deps) or any(s not in FINISHED for s in statuses):
            return
        prev = prefix + depends_on[-1] if depends_on else None
        rule = node.step.trigger
        if deps and not flowctx.trigger_ok(rule, statuses):
            reason = {
                "reason": "trigger_rule",
                "rule": rule,
                "dependencies": dict(zip(depends_on, statuses, strict=True)),
            }
            self.skip(path, prev, reason)
            return
        self.enter(path, prev)

    def maybe_finish_dag(self, scope: plans.Scope) -> None:
        if not self.scope_alive(scope) or self.queued_in(scope):
            return
        prefix = scope.prefix
        if any(p.startswith(prefix) and "/" not in p[len(prefix) :] for p in self.s.active):
            return
        unfinished = [
            s
            for s in scope.steps
            if (x := self.s.steps.get(prefix + s.name)) is None or x.status not in FINISHED
        ]
        # an error branch that was not needed: dependents of it learn it was skipped
        idle = [s for s in unfinished if s.name in scope.handlers and scope.dependents.get(s.name)]
        for s in idle:
            self.skip(prefix + s.name, None, {"reason": "error_branch_not_taken"})
        if idle:
            return
        waiting = [s for s in unfinished if s.name not in scope.handlers]
        if waiting:  # nothing runs yet these did not start (e.g. after a retry): look again
            for s in waiting:
                self.schedule_consider(prefix + s.name)
            return
        failed = [
            x
            for s in scope.steps
            if (x := self.s.steps.get(prefix + s.name)) is not None
            and x.status == "failed"
            and not x.handled
        ]
        if failed:
            self.scope_failed(scope, failed[0].error or {})
            return
        output = {
            name: x.output
            for name in scope.leaves
            if (x := self.s.steps.get(prefix + name)) is not None and x.status == "completed"
        }
        self.scope_done(scope, output)

    def scope_done(self, scope: plans.Scope, output: Any) -> None:
        if scope.parent is None:
            if not self.terminal:
                self.finish_workflow("completed", output=output)
            return
        if not self.scope_alive(scope):
            return
        assert scope.branch is not None
        parent = self.s.step(scope.parent)
        step = self.plan.node(scope.parent).step
        if isinstance(step, models.MapStep):
            record = self.s.branches[scope.parent][scope.branch]
            record["results"].append(output)
            record["index"] += 1
            self.next_item(parent, step)
            return
        assert isinstance(step, models.ParallelStep)
        results = self.s.branches.setdefault(scope.parent, {})
        results[scope.branch] = {"status": "completed", "output": output}
        if step.mode == "race":
            self.cancel_under(scope.parent + "/", "lost the race")
            self.succeed(parent, {"winner": scope.branch, "value": output})
            return
        self.start_branches(parent, step)
        self.maybe_join(parent, step)

    def scope_failed(self, scope: plans.Scope, error: dict[str, Any]) -> None:
        if scope.parent is None:
            if not self.terminal and self.s.status != "compensating":
                self.cancel_active("failed")
                self.fail_workflow(error)
            return
        if not self.scope_alive(scope):
            return
        assert scope.branch is not None
        parent = self.s.step(scope.parent)
        step = self.plan.node(scope.parent).step
        self.cancel_under(scope.prefix, "its branch failed")  # the rest of a DAG branch
        if isinstance(step, models.MapStep):
            record = self.s.branches[scope.parent][scope.branch]
            record["status"] = "failed"
            index = record["index"]
            self.fail(
                parent,
                {
                    "type": "ItemFailed",
                    "message": f"item {index} failed: {error.get('message')}",
                    "index": index,
                    "errors": [error],
                },
                retry=False,
            )
            return
        assert isinstance(step, models.ParallelStep)
        self.s.branches.setdefault(scope.parent, {})[scope.branch] = {
            "status": "failed",
            "error": error,
        }
        if step.failure == "fail-fast" or step.mode == "race":
            self.cancel_under(scope.parent + "/", "another branch failed")
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
        self.start_branches(parent, step)
        self.maybe_join(parent, step)

    def maybe_join(self, parent: StepState, step: models.ParallelStep) -> None:
        if parent.status != "running":
            return
        results = self.s.branches.get(parent.path, {})
        final = {
            b.name: results[b.name]
            for b in step.branches
            if results.get(b.name, {}).get("status") in ("completed", "failed")
        }
        if len(final) < len(step.branches):
            return
        errors_ = [r["error"] for r in final.values() if r["status"] == "failed"]
        if errors_:
            msg = "; ".join(str(e.get("message")) for e in errors_)
            self.fail(
                parent, {"type": "BranchFailed", "message": msg, "errors": errors_}, retry=False
            )
        else:
            self.succeed(parent, {b.name: final[b.name]["output"] for b in step.branches})

    def cancel_under(self, prefix: str, reason: str) -> None:
        for path in [p for p in self.s.active if p.startswith(prefix)]:
            self.cancel_step(path, reason)

    def cancel_step(self, path: str, reason: str) -> None:
        st = self.s.step(path)
        if st.status in ("running", "waiting", "pending"):
            st.status, st.phase, st.wake_at, st.completed_at = "cancelled", "", None, self.now
            self.touch(st)
            self.log("workflow.step.cancelled", path, reason=reason)
        self.deactivate(path)

    def cancel_active(self, reason: str) -> None:
        for path in list(self.s.active):
            self.cancel_step(path, reason)

    def finish_workflow(
        self, status: str, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        self.s.status = status
        self.s.output, self.s.error = output, error
        self.s.completed_at = self.now
        if status == "completed" and not any(
            h.type == "workflow.progress" and h.data.get("progress") == 100 for h in self.d.history
        ):
            self.log("workflow.progress", None, progress=100)
        data: dict[str, Any] = {"output": output} if status == "completed" else {"error": error}
        self.log(f"workflow.{status}", None, **data)

    # -- saga ----------------------------------------------------------------------------
    def fail_workflow(self, error: dict[str, Any]) -> None:
        """Fail, after undoing completed tasks that declared ``compensate`` (newest first)."""
        todo = saga.compensations(self.plan, self.s)
        if not todo:
            self.finish_workflow("failed", error=error)
            return
        self.s.status, self.s.error, self.s.compensations = "compensating", error, todo
        self.log("workflow.compensating", None, steps=list(todo), error=error)
        self.next_compensation()

    def next_compensation(self) -> None:
        if not self.s.compensations:
            self.finish_workflow("failed", error=self.s.error)
            return
        path = self.s.compensations.pop(0)
        done = self.s.steps[path]
        st = StepState(
            path=saga.compensation_path(path), status="running", phase="run", prev=path,
            input=copy.deepcopy(done.output), attempts=1, iteration=done.iteration, started_at=self.now,
        )  # fmt: skip
        self.s.steps[st.path] = st
        self.touch(st)
        self.activate(st.path)
        self.log("workflow.step.started", st.path, compensating=path)

    def compensation_done(
        self, st: StepState, output: Any, error: dict[str, Any] | None, retry: bool
    ) -> None:
        if error is not None:
            policy = flowctx.retry_policy(
                self.definition, self.plan.node(saga.base_path(st.path)).step
            )
            error = {**error, "step": st.path, "attempt": st.attempts}
            if retry and policy is not None and st.attempts < policy.max_attempts:
                delay = flowctx.retry_delay(policy, st.attempts)
                st.status, st.phase, st.error = "waiting", "retry", error
                st.wake_at = self.now + timedelta(seconds=delay)
                self.touch(st)
                self.log(
                    "workflow.step.retry", st.path, error=error, attempt=st.attempts, delay=delay
                )
                return
            st.status, st.error = "failed", error
            self.s.error = {**(self.s.error or {}), "compensation_errors": [
                *(self.s.error or {}).get("compensation_errors", []), error]}  # fmt: skip
            self.log("workflow.step.failed", st.path, error=error, attempt=st.attempts)
        else:
            st.status, st.output = "completed", output
            self.log("workflow.step.completed", st.path, output=output, attempt=st.attempts)
        st.phase, st.wake_at, st.completed_at = "", None, self.now
        self.touch(st)
        self.deactivate(st.path)
        self.next_compensation()

    # -- subworkflows --------------------------------------------------------------------
    def child_started(self, path: str) -> None:
        st = self.s.steps.get(path)
        if (
            st is not None
            and path in self.s.active
            and st.status == "running"
            and st.phase == "child"
        ):
            st.status, st.phase = "waiting", "child-wait"
            self.touch(st)

    def child_finished(self, event: ChildFinished) -> None:
        st = self.s.steps.get(event.path)
        if st is None or event.path not in self.s.active or st.phase not in ("child", "child-wait"):
            return
        st.status = "running"
        if event.status == "completed":
            self.succeed(st, event.output)
            return
        error = event.error or {
            "type": "ChildFailed",
            "message": f"the child workflow ended {event.status}",
        }
        message = f"subworkflow {event.path!r} ended {event.status}: {error.get('message')}"
        self.fail(
            st, {"type": "SubworkflowFailed", "message": message, "child": error}, retry=False
        )

    # -- events ------------------------------------------------------------------------
    def start(self) -> None:
        if self.s.status != "pending":
            return
        self.s.status = "running"
        self.s.started_at = self.now
        if self.definition.timeout is not None:
            self.s.deadline = self.now + timedelta(seconds=self.definition.timeout)
        self.start_scope(self.plan.top, None)

    def resumable(self, path: str) -> bool:
        """A failed or cancelled step a retry continues from: no enclosing step is done with it."""
        for container, _ in _ancestors(path):
            parent = self.s.steps.get(container)
            if parent is None:
                return False
            if parent.status == "failed" and parent.handled:
                return False
            if parent.status not in ("failed", "cancelled", "running"):
                return False
        return True

    def retry(self) -> None:
        if self.s.status != "failed":
            return
        found = [
            st
            for st in self.s.steps.values()
            if ((st.status == "failed" and not st.handled) or st.status == "cancelled")
            and self.resumable(st.path)
        ]
        containers = sorted(
            (st for st in found if models.child_branches(self.plan.node(st.path).step)),
            key=lambda st: st.path.count("/"),
        )
        leaves = [st for st in found if not models.child_branches(self.plan.node(st.path).step)]
        self.s.status, self.s.error, self.s.completed_at, self.s.output = (
            "running",
            None,
            None,
            None,
        )
        for parent in containers:
            parent.status, parent.phase, parent.error, parent.completed_at = (
                "running",
                "branches",
                None,
                None,
            )
            self.touch(parent)
            self.activate(parent.path)
            results = self.s.branches.setdefault(parent.path, {})
            for name, result in list(results.items()):
                if result.get("status") == "failed":
                    kept = {k: v for k, v in result.items() if k != "error"}
                    results[name] = {**kept, "status": "running"}
        for st in leaves:
            st.status, st.attempts, st.error, st.phase, st.wake_at = "pending", 0, None, "", None
            self.touch(st)
            self.schedule_enter(st.path, st.prev)
        for parent in containers:
            step = self.plan.node(parent.path).step
            if isinstance(step, models.ParallelStep):
                self.start_branches(parent, step)
        self.drain()
        for parent in containers:  # branches that had finished before: the join may be due
            step = self.plan.node(parent.path).step
            if isinstance(step, models.ParallelStep):
                self.maybe_join(parent, step)

    def tick(self) -> None:
        compensating = self.s.status == "compensating"  # undoing is allowed to outlive the deadline
        if (
            self.s.deadline is not None
            and self.now >= self.s.deadline
            and not self.terminal
            and not compensating
        ):
            self.cancel_active("timed_out")
            self.finish_workflow(
                "timed_out",
                error={"type": "WorkflowTimeout", "message": "the workflow exceeded its timeout"},
            )
            return
        for path in list(self.s.active):
            if self.s.status not in ("running", "waiting", "compensating"):
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
            elif st.status == "waiting" and st.wake_at is not None and self.now >= st.wake_at:
                self.wake(st)
            self.drain()

    def wake(self, st: StepState) -> None:
        node = self.plan.node(saga.base_path(st.path))
        phase, st.wake_at = st.phase, None
        self.touch(st)
        if phase == "delay":
            self.begin(st, node)
        elif phase in ("retry", "poll"):
            st.status, st.phase = "running", "run"
            st.attempts += 1
        elif phase == "timer":
            self.succeed(st, copy.deepcopy(self.view(st.path, st.prev).prev))
        elif phase == "loop":
            self.jump(st, node)

    def running(self, path: str) -> StepState | None:
        """The step if its handler result is expected now; None for a late or unknown result."""
        st = self.s.steps.get(path)
        if st is None or st.status != "running" or st.phase != "run" or path not in self.s.active:
            return None
        return st

    def succeeded(self, path: str, output: Any) -> None:
        st = self.running(path)
        if st is None:
            return  # a late result of a cancelled step
        if saga.is_compensation(path):
            self.compensation_done(st, output, None, False)
            return
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
        st = self.running(path)
        if st is None:
            return
        if saga.is_compensation(path):
            self.compensation_done(st, None, error, retryable)
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

    def cancel(self, reason: str) -> None:
        if self.terminal:
            return
        self.queue.clear()
        self.cancel_active(reason)
        self.finish_workflow("cancelled", error={"type": "Cancelled", "message": reason})


def _rule_status(st: StepState) -> str:
    """A dependency's status for trigger rules.

    A failure taken by ``on_error`` (continue, or an error branch) counts as a failure here:
    it no longer fails the instance, but ``all_success`` / ``none_failed_min_one_success``
    dependents do not run after it while ``all_done`` / ``always`` ones do (as in Airflow).
    """
    return st.status


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
        run.cancel(event.reason)
    elif isinstance(event, ChildStarted):
        run.child_started(event.path)
    elif isinstance(event, ChildFinished):
        run.child_finished(event)
    run.drain()
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
    """The earliest timer of the instance (retry, poll, delay, wait, timeout); None if none.

    Work that can run now (``Decision.runnable``) is not a timer: callers check it first.
    """
    if state.status in TERMINAL:
        return None
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
