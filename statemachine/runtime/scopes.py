"""Flow rules of scopes with several steps at once: DAG trigger rules, parallel joins and races, maps.

Functions of the interpreter's run (``FlowRun``), kept here so that each module stays one concern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata, rules
from statemachine.runtime import plan as plans
from statemachine.runtime.state import FINISHED, MAP, StepState

if TYPE_CHECKING:
    from statemachine.runtime.interpreter import FlowRun


def start_scope(run: FlowRun, scope: plans.Scope, prev: str | None) -> None:
    """Start a scope: its first step, or every DAG root (whose conditions are checked).

    A scope started again (a loop around a parallel, the next item of a map) starts from
    scratch: results of its previous round become ``pending`` one iteration later.
    """
    for step in scope.steps:
        old = run.s.steps.get(scope.prefix + step.name)
        if old is not None and old.status != "pending":
            if old.status == "completed":
                run.s.latest[old.path] = old.output
            fresh = StepState(path=old.path, status="pending", iteration=old.iteration + 1)
            run.s.steps[old.path] = fresh
            run.touch(fresh)
    if scope.dag:
        for root in run.plan.roots(scope):
            run.schedule_consider(root)
        for step in scope.steps:  # Airflow's ``always`` waits for nothing
            if step.trigger == "always" and step.depends_on and step.name not in scope.handlers:
                run.schedule_consider(scope.prefix + step.name)
    elif scope.steps:
        run.schedule_enter(scope.prefix + scope.steps[0].name, prev)
    else:  # validation refuses empty branches; pass the input through all the same
        run.scope_done(scope, flowctx.prev_value(run.s, prev))


def start_branches(run: FlowRun, parent: StepState, step: models.ParallelStep) -> None:
    """Start branches not started yet, up to ``max_concurrency`` running at once."""
    results = run.s.branches.setdefault(parent.path, {})
    limit = step.max_concurrency or len(step.branches)
    running = sum(1 for r in results.values() if r.get("status") == "running")
    for br in step.branches:
        if running >= limit:
            break
        if br.name in results:
            continue
        results[br.name] = {"status": "running"}
        running += 1
        scope = run.plan.scope(f"{parent.path}/{br.name}/")
        assert scope is not None
        run.start_scope(scope, parent.prev)


def next_item(run: FlowRun, parent: StepState, step: models.MapStep) -> None:
    """Start items up to ``max_concurrency``; when every item is done, the map's output is the
    list of their results in item order.

    Item ``i`` runs the iterator's steps under ``map/iterator@i/``, so items can run at once;
    the latest item's result is also shown at the plain path (``map/iterator/step``).
    """
    records = run.s.branches[parent.path]
    meta = records[MAP]
    items = meta["items"]
    limit = step.max_concurrency or max(1, len(items))
    running = sum(1 for key, r in records.items() if key != MAP and r.get("status") == "running")
    while running < limit and meta["next"] < len(items):
        index = meta["next"]
        meta["next"] += 1
        scope = run.plan.item_scope(parent.path, index)
        assert scope.branch is not None
        records[scope.branch] = {
            "status": "running",
            "index": index,
            "item": jsondata.copy_json(items[index]),
        }
        running += 1
        run.start_scope(scope, None)
    if running == 0 and meta["next"] >= len(items) and parent.status == "running":
        run.succeed(parent, [item_result(run, parent, step, i) for i in range(len(items))])


def item_result(run: FlowRun, parent: StepState, step: models.MapStep, index: int) -> Any:
    """Item ``index``'s result (every item of this round has finished, and written its record
    over any of an earlier round); a state stored before results had records of their own
    keeps them in the map's ``results``."""
    record = run.s.peek(plans.item_prefix(parent.path, step, index))
    if record is not None:
        return record.output
    return run.s.branches[parent.path][MAP].get("results", {}).get(str(index))


def consider(run: FlowRun, path: str) -> None:
    """A DAG step one of whose dependencies finished (or a root): run it, skip it and say why,
    or leave it waiting, as its trigger rule says (``rules.verdict``)."""
    node = run.plan.node(path)
    st = run.s.peek(path)
    if st is not None and st.status != "pending":
        return
    prefix = node.scope.prefix
    depends_on = node.step.depends_on
    states = [rules.dependency_state(run.s.peek(prefix + d)) for d in depends_on]
    rule = node.step.trigger
    verdict = rules.verdict(rule, states)
    if verdict == "wait":
        return
    prev_name = rules.prev_of(depends_on, states)
    prev = None if prev_name is None else prefix + prev_name
    if verdict == "run":
        run.enter(path, prev)
        return
    deps = dict(zip(depends_on, states, strict=True))
    run.skip(path, prev, rules.skip_reason(rule, verdict, deps))


def maybe_finish_dag(run: FlowRun, scope: plans.Scope) -> None:
    if not run.scope_alive(scope) or run.queued_in(scope):
        return
    prefix = scope.prefix
    unused = _unused_handlers(run, scope)
    for name in unused:  # its dependents learn at once that it was skipped
        run.skip(prefix + name, None, {"reason": "error_branch_not_taken"})
    if unused:
        return
    if any(p.startswith(prefix) and "/" not in p[len(prefix) :] for p in run.s.active):
        return
    unfinished = [
        s
        for s in scope.steps
        if (x := run.s.peek(prefix + s.name)) is None or x.status not in FINISHED
    ]
    # an error branch that was not needed: dependents of it learn it was skipped
    idle = [s for s in unfinished if s.name in scope.handlers and scope.dependents.get(s.name)]
    for s in idle:
        run.skip(prefix + s.name, None, {"reason": "error_branch_not_taken"})
    if idle:
        return
    waiting = [s for s in unfinished if s.name not in scope.handlers]
    if waiting:  # nothing runs yet these did not start (e.g. after a retry): look again
        for s in waiting:
            run.schedule_consider(prefix + s.name)
        return
    failed = [
        x
        for s in scope.steps
        if (x := run.s.peek(prefix + s.name)) is not None and x.status == "failed" and not x.handled
    ]
    if failed:
        run.scope_failed(scope, failed[0].error or {})
        return
    output = {
        name: x.output
        for name in scope.leaves
        if (x := run.s.peek(prefix + name)) is not None and x.status == "completed"
    }
    run.scope_done(scope, output)


def scope_done(run: FlowRun, scope: plans.Scope, output: Any) -> None:
    if scope.parent is None:
        if not run.terminal:
            run.finish_workflow("completed", output=output)
        return
    if not run.scope_alive(scope):
        return
    assert scope.branch is not None
    parent = run.s.step(scope.parent)
    step = run.plan.node(scope.parent).step
    if isinstance(step, models.MapStep):
        # a finished item leaves the state column (rewritten on every commit of the map: n
        # items cost n² there) for a record of its own at its prefix, one step row written once
        run.s.branches[scope.parent].pop(scope.branch)
        run.s.steps[scope.prefix] = done = StepState(
            path=scope.prefix,
            status="completed",
            output=output,
            iteration=parent.iteration,
            completed_at=run.now,
        )
        run.touch(done)
        run.next_item(parent, step)
        return
    assert isinstance(step, models.ParallelStep)
    results = run.s.branches.setdefault(scope.parent, {})
    results[scope.branch] = {"status": "completed", "output": output}
    if step.mode == "race":
        run.cancel_under(scope.parent + "/", "lost the race")
        run.succeed(parent, {"winner": scope.branch, "value": output})
        return
    run.start_branches(parent, step)
    run.maybe_join(parent, step)


def scope_failed(run: FlowRun, scope: plans.Scope, error: dict[str, Any]) -> None:
    if scope.parent is None:
        if not run.terminal and run.s.status != "compensating":
            run.cancel_active("failed")
            run.fail_workflow(error)
        return
    if not run.scope_alive(scope):
        return
    assert scope.branch is not None
    parent = run.s.step(scope.parent)
    step = run.plan.node(scope.parent).step
    run.cancel_under(scope.prefix, "its branch failed")  # the rest of a DAG branch
    if isinstance(step, models.MapStep):
        record = run.s.branches[scope.parent][scope.branch]
        record["status"] = "failed"
        index = record["index"]
        run.cancel_under(scope.parent + "/", "another item failed")
        run.fail(
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
    run.s.branches.setdefault(scope.parent, {})[scope.branch] = {
        "status": "failed",
        "error": error,
    }
    if step.failure == "fail-fast" and step.mode != "race":  # a race goes on: see maybe_join
        run.cancel_under(scope.parent + "/", "another branch failed")
        run.fail(
            parent,
            {
                "type": "BranchFailed",
                "message": f"branch {scope.branch!r} failed: {error.get('message')}",
                "errors": [error],
            },
            retry=False,
        )
        return
    run.start_branches(parent, step)
    run.maybe_join(parent, step)


def maybe_join(run: FlowRun, parent: StepState, step: models.ParallelStep) -> None:
    if parent.status != "running":
        return
    results = run.s.branches.get(parent.path, {})
    if step.mode == "race" and step.branches:
        race_lost(run, parent, step, results)
        return
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
        run.fail(parent, {"type": "BranchFailed", "message": msg, "errors": errors_}, retry=False)
    else:
        run.succeed(parent, {b.name: final[b.name]["output"] for b in step.branches})


def _unused_handlers(run: FlowRun, scope: plans.Scope) -> list[str]:
    """Error branches with dependents that will not run: every step that names them finished
    without failing (a skipped step, or one that succeeded)."""
    found = []
    for name in sorted(scope.handlers):
        if not scope.dependents.get(name):
            continue
        own = run.s.peek(scope.prefix + name)
        if own is not None and own.status != "pending":
            continue
        sources = [
            run.s.peek(scope.prefix + s.name)
            for s in scope.steps
            if s.on_error == "branch" and s.error_next == name
        ]
        if all(x is not None and x.status in ("completed", "skipped") for x in sources):
            found.append(name)
    return found


def race_lost(
    run: FlowRun, parent: StepState, step: models.ParallelStep, results: dict[str, Any]
) -> None:
    """A race fails only once every branch has failed (a success ends it in ``scope_done``),
    with every branch's error, so that a primary/backup failover can be written."""
    if not all(results.get(b.name, {}).get("status") == "failed" for b in step.branches):
        return
    errors_ = [results[b.name]["error"] for b in step.branches]
    msg = "; ".join(
        f"{b.name}: {e.get('message')}" for b, e in zip(step.branches, errors_, strict=True)
    )
    error = {"type": "RaceError", "message": f"every branch of the race failed: {msg}"}
    run.fail(parent, {**error, "errors": errors_}, retry=False)
