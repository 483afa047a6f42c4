"""Flow rules of scopes with several steps at once: DAG trigger rules, parallel joins and races, maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from statemachine.definition import models
from statemachine.runtime import flowview, jsondata, rules
from statemachine.runtime.flowbase import FlowBase
from statemachine.runtime.plan import Scope, item_prefix
from statemachine.runtime.state import FINISHED, MAP, StepState
from statemachine.vocabulary import ErrorInfo, InstanceStatus, StepStatus, error_info


def _stored(errors: list[Any]) -> list[ErrorInfo]:
    """Branch errors as their records hold them: each was written by ``fail`` as an
    ``ErrorInfo`` (plus the step and attempt)."""
    return cast(list[ErrorInfo], errors)


class Scopes(FlowBase):
    """Starting scopes and branches, DAG steps' trigger rules, and what ends a scope."""

    def start_scope(self, scope: Scope, prev: str | None) -> None:
        """Start a scope: its first step, or every DAG root (whose conditions are checked).

        A scope started again (a loop around a parallel, the next item of a map) starts from
        scratch: results of its previous round become ``pending`` one iteration later.
        """
        for step in scope.steps:
            old = self.state.peek(scope.prefix + step.name)
            if old is not None and old.status != StepStatus.PENDING:
                if old.status == StepStatus.COMPLETED:
                    self.state.latest[old.path] = old.output
                fresh = StepState(
                    path=old.path, status=StepStatus.PENDING, iteration=old.iteration + 1
                )
                self.touch(self.state.put(fresh))
        if scope.dag:
            for root in self.plan.roots(scope):
                self.schedule_consider(root)
            for step in scope.steps:  # Airflow's ``always`` waits for nothing
                if step.trigger == "always" and step.depends_on and step.name not in scope.handlers:
                    self.schedule_consider(scope.prefix + step.name)
        elif scope.steps:
            self.schedule_enter(scope.prefix + scope.steps[0].name, prev)
        else:  # validation refuses empty branches; pass the input through all the same
            self.scope_done(scope, flowview.prev_value(self.state, prev))

    def start_branches(self, parent: StepState, step: models.ParallelStep) -> None:
        """Start branches not started yet, up to ``max_concurrency`` running at once."""
        results = self.state.branches.setdefault(parent.path, {})
        limit = step.max_concurrency or len(step.branches)
        running = sum(1 for r in results.values() if r.get("status") == StepStatus.RUNNING)
        for br in step.branches:
            if running >= limit:
                break
            if br.name in results:
                continue
            results[br.name] = {"status": StepStatus.RUNNING}
            running += 1
            scope = self.plan.scope(f"{parent.path}/{br.name}/")
            assert scope is not None
            self.start_scope(scope, parent.prev)

    def next_item(self, parent: StepState, step: models.MapStep) -> None:
        """Start items up to ``max_concurrency``; when every item is done, the map's output is the
        list of their results in item order.

        Item ``i`` runs the iterator's steps under ``map/iterator@i/``, so items can run at once;
        the latest item's result is also shown at the plain path (``map/iterator/step``).
        """
        records = self.state.branches[parent.path]
        meta = records[MAP]
        items = meta["items"]
        limit = step.max_concurrency or max(1, len(items))
        running = sum(
            1 for key, r in records.items() if key != MAP and r.get("status") == StepStatus.RUNNING
        )
        while running < limit and meta["next"] < len(items):
            index = meta["next"]
            meta["next"] += 1
            scope = self.plan.item_scope(parent.path, index)
            assert scope.branch is not None
            records[scope.branch] = {
                "status": StepStatus.RUNNING,
                "index": index,
                "item": jsondata.copy_json(items[index]),
            }
            running += 1
            self.start_scope(scope, None)
        if running == 0 and meta["next"] >= len(items) and parent.status == StepStatus.RUNNING:
            self.succeed(parent, [self.item_result(parent, step, i) for i in range(len(items))])

    def item_result(self, parent: StepState, step: models.MapStep, index: int) -> Any:
        """Item ``index``'s result (every item of this round has finished, and written its
        record over any of an earlier round); a state stored by the previous release, before
        results had records of their own, keeps them in the map's ``results``."""
        record = self.state.peek(item_prefix(parent.path, step, index))
        if record is not None:
            return record.output
        return self.state.branches[parent.path][MAP].get("results", {}).get(str(index))

    def consider(self, path: str) -> None:
        """A DAG step one of whose dependencies finished (or a root): run it, skip it and say why,
        or leave it waiting, as its trigger rule says (``rules.verdict``)."""
        node = self.plan.node(path)
        st = self.state.peek(path)
        if st is not None and st.status != StepStatus.PENDING:
            return
        prefix = node.scope.prefix
        depends_on = node.step.depends_on
        states = [rules.dependency_state(self.state.peek(prefix + d)) for d in depends_on]
        rule = node.step.trigger
        verdict = rules.verdict(rule, states)
        if verdict == "wait":
            return
        prev_name = rules.prev_of(depends_on, states)
        prev = None if prev_name is None else prefix + prev_name
        if verdict == "run":
            self.enter(path, prev)
            return
        deps = dict(zip(depends_on, states, strict=True))
        self.skip(path, prev, rules.skip_reason(rule, verdict, deps))

    def maybe_finish_dag(self, scope: Scope) -> None:
        if not self.scope_alive(scope) or self.queued_in(scope):
            return
        prefix = scope.prefix
        unused = self._unused_handlers(scope)
        for name in unused:  # its dependents learn at once that it was skipped
            self.skip(prefix + name, None, {"reason": "error_branch_not_taken"})
        if unused:
            return
        if any(p.startswith(prefix) and "/" not in p[len(prefix) :] for p in self.state.active):
            return
        unfinished = [
            s
            for s in scope.steps
            if (x := self.state.peek(prefix + s.name)) is None or x.status not in FINISHED
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
            if (x := self.state.peek(prefix + s.name)) is not None
            and x.status == StepStatus.FAILED
            and not x.handled
        ]
        if failed:
            self.scope_failed(scope, failed[0].error or {})
            return
        output = {
            name: x.output
            for name in scope.leaves
            if (x := self.state.peek(prefix + name)) is not None
            and x.status == StepStatus.COMPLETED
        }
        self.scope_done(scope, output)

    def scope_done(self, scope: Scope, output: Any) -> None:
        if scope.parent is None:
            if not self.terminal:
                self.finish_workflow(InstanceStatus.COMPLETED, output=output)
            return
        if not self.scope_alive(scope):
            return
        assert scope.branch is not None
        parent = self.state.step(scope.parent)
        step = self.plan.node(scope.parent).step
        if isinstance(step, models.MapStep):
            # a finished item leaves the state column (rewritten on every commit of the map: n
            # items cost n² there) for a record of its own at its prefix, one step row written once
            self.state.branches[scope.parent].pop(scope.branch)
            done = StepState(
                path=scope.prefix,
                status=StepStatus.COMPLETED,
                output=output,
                iteration=parent.iteration,
                completed_at=self.now,
            )
            self.touch(self.state.put(done))
            self.next_item(parent, step)
            return
        assert isinstance(step, models.ParallelStep)
        results = self.state.branches.setdefault(scope.parent, {})
        results[scope.branch] = {"status": StepStatus.COMPLETED, "output": output}
        if step.mode == "race":
            self.cancel_under(scope.parent + "/", "lost the race")
            self.succeed(parent, {"winner": scope.branch, "value": output})
            return
        self.start_branches(parent, step)
        self.maybe_join(parent, step)

    def scope_failed(self, scope: Scope, error: Mapping[str, Any]) -> None:
        if scope.parent is None:
            if not self.terminal and self.state.status != InstanceStatus.COMPENSATING:
                self.cancel_active("failed")
                self.fail_workflow(error)
            return
        if not self.scope_alive(scope):
            return
        assert scope.branch is not None
        parent = self.state.step(scope.parent)
        step = self.plan.node(scope.parent).step
        self.cancel_under(scope.prefix, "its branch failed")  # the rest of a DAG branch
        if isinstance(step, models.MapStep):
            record = self.state.branches[scope.parent][scope.branch]
            record["status"] = StepStatus.FAILED
            index = record["index"]
            self.cancel_under(scope.parent + "/", "another item failed")
            message = f"item {index} failed: {error.get('message')}"
            failure = {**error_info("ItemFailed", message), "index": index, "errors": [error]}
            self.fail(parent, failure, retry=False)
            return
        assert isinstance(step, models.ParallelStep)
        self.state.branches.setdefault(scope.parent, {})[scope.branch] = {
            "status": StepStatus.FAILED,
            "error": error,
        }
        if step.failure == "fail-fast" and step.mode != "race":  # a race goes on: see maybe_join
            self.cancel_under(scope.parent + "/", "another branch failed")
            message = f"branch {scope.branch!r} failed: {error.get('message')}"
            failed = error_info("BranchFailed", message, errors=_stored([error]))
            self.fail(parent, failed, retry=False)
            return
        self.start_branches(parent, step)
        self.maybe_join(parent, step)

    def maybe_join(self, parent: StepState, step: models.ParallelStep) -> None:
        if parent.status != StepStatus.RUNNING:
            return
        results = self.state.branches.get(parent.path, {})
        if step.mode == "race" and step.branches:
            self.race_lost(parent, step, results)
            return
        final = {
            b.name: results[b.name]
            for b in step.branches
            if results.get(b.name, {}).get("status") in (StepStatus.COMPLETED, StepStatus.FAILED)
        }
        if len(final) < len(step.branches):
            return
        errors_ = [r["error"] for r in final.values() if r["status"] == StepStatus.FAILED]
        if errors_:
            msg = "; ".join(str(e.get("message")) for e in errors_)
            self.fail(parent, error_info("BranchFailed", msg, errors=_stored(errors_)), retry=False)
        else:
            self.succeed(parent, {b.name: final[b.name]["output"] for b in step.branches})

    def _unused_handlers(self, scope: Scope) -> list[str]:
        """Error branches with dependents that will not run: every step that names them finished
        without failing (a skipped step, or one that succeeded)."""
        found = []
        for name in sorted(scope.handlers):
            if not scope.dependents.get(name):
                continue
            own = self.state.peek(scope.prefix + name)
            if own is not None and own.status != StepStatus.PENDING:
                continue
            sources = [
                self.state.peek(scope.prefix + s.name)
                for s in scope.steps
                if s.on_error == "branch" and s.error_next == name
            ]
            if all(
                x is not None and x.status in (StepStatus.COMPLETED, StepStatus.SKIPPED)
                for x in sources
            ):
                found.append(name)
        return found

    def race_lost(
        self, parent: StepState, step: models.ParallelStep, results: dict[str, Any]
    ) -> None:
        """A race fails only once every branch has failed (a success ends it in ``scope_done``),
        with every branch's error, so that a primary/backup failover can be written."""
        if not all(
            results.get(b.name, {}).get("status") == StepStatus.FAILED for b in step.branches
        ):
            return
        errors_ = [results[b.name]["error"] for b in step.branches]
        msg = "; ".join(
            f"{b.name}: {e.get('message')}" for b, e in zip(step.branches, errors_, strict=True)
        )
        message = f"every branch of the race failed: {msg}"
        self.fail(parent, error_info("RaceError", message, errors=_stored(errors_)), retry=False)
