"""Whether an instance can move to another version: static checks over the two graphs and its
stored state, made before anything changes (API.md section 11).

An instance is blocked, with every reason, when one of its steps in flight (running, backing
off, waiting for a timer, an event, a poll or its child, between loop iterations, running
branches, due to start, still to be compensated) has no step of the same type in the new
version (after the mapping), when a loop or map in flight would change shape (its target, its
iterator, its limit), when a parallel's running branch is gone, when the step to resume would
get an input its new ``input_schema`` refuses, or when the new graph leaves its position with
no way to an end (a DAG step whose new dependency never ran). Each reason names the step and
what to do, as a user reads it in the CLI's table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from statemachine.definition import graph, models, schemas
from statemachine.runtime.migration import rename
from statemachine.runtime.paths import base_path, is_compensation
from statemachine.runtime.plan import Plan, template_path
from statemachine.runtime.state import MAP, State, StepView, is_item_result
from statemachine.vocabulary import InstanceStatus, Phase, StepStatus

__all__ = ["blockers"]

_IN_FLIGHT = frozenset({StepStatus.RUNNING, StepStatus.WAITING})
_RESUMES = frozenset({Phase.NONE, Phase.RUN, Phase.RETRY, Phase.DELAY, Phase.LIMIT})
_DOING = {
    Phase.DELAY: "due to start",
    Phase.RUN: "running",
    Phase.RETRY: "backing off before a retry",
    Phase.LIMIT: "waiting for its action's limit",
    Phase.POLL: "polling",
    Phase.TIMER: "waiting for its timer",
    Phase.LOOP: "between loop iterations",
    Phase.BRANCHES: "running its branches",
    Phase.CHILD: "starting its child",
    Phase.CHILD_WAIT: "waiting for its child",
}


def blockers(
    old: Plan, new: Plan, state: State, moved: State, mapping: Mapping[str, str]
) -> list[str]:
    """Every reason ``state`` (under ``old``) cannot continue as ``moved`` (the same state,
    its paths renamed by ``mapping``) under ``new``; empty: it can."""
    found: list[str] = []
    version = f"version {new.definition.version}"
    for path in _in_flight(state):
        found.extend(_step(old, new, state, moved, path, mapping, version))
    found.extend(_loops(old, new, state, mapping, version))
    found.extend(_branches(old, new, state, mapping, version))
    if state.status == InstanceStatus.COMPENSATING:
        found.extend(_compensations(new, state, mapping, version))
    return list(dict.fromkeys(found))


def _in_flight(state: State) -> list[str]:
    """Paths of the steps the instance is in the middle of (not its compensations, checked on
    their own): active, held by a pause, to be redone, or running or waiting."""
    paths = list(state.active)
    paths += [item[1] for item in state.deferred if len(item) > 1 and isinstance(item[1], str)]
    paths += state.redo
    paths += [p for p, st in state.steps.items() if st.status in _IN_FLIGHT]
    return [p for p in dict.fromkeys(paths) if not is_compensation(p) and not is_item_result(p)]


def _doing(st: StepView | None) -> str:
    if st is None:
        return "due to start"
    if st.phase == Phase.EVENT:
        return f"waiting for event {st.event!r}"
    return _DOING.get(st.phase, str(st.status))


def _step(
    old: Plan,
    new: Plan,
    state: State,
    moved: State,
    path: str,
    mapping: Mapping[str, str],
    version: str,
) -> Iterator[str]:
    st = state.peek(path)
    to = rename(path, mapping)
    was, now = template_path(path), template_path(to)
    old_node, node = old.nodes.get(was), new.nodes.get(now)
    if old_node is None:
        return  # not a step of its own version: nothing to say about it
    if node is None:
        hint = f" (map it to a step of {version})" if was == now else ""
        yield f"step {was!r} is {_doing(st)} and {version} has no step {now!r}{hint}"
        return
    before, after = old_node.step, node.step
    if before.kind != after.kind:
        yield (
            f"step {was!r} is a {before.kind} step {_doing(st)}; {now!r} in {version} "
            f"is a {after.kind} step"
        )
        return
    if st is not None:
        yield from _same_type(before, after, st, path, to, was, now, version)
    old_prefix = path[: len(path) - len(before.name)]
    before_deps = {rename(old_prefix + d, mapping) for d in before.depends_on}
    yield from _position(new, moved, to, now, version, before_deps)


def _same_type(
    before: models.StepBase,
    after: models.StepBase,
    st: StepView,
    path: str,
    to: str,
    was: str,
    now: str,
    version: str,
) -> Iterator[str]:
    """What a step of the same type must keep while it is in flight."""
    if isinstance(after, models.WaitStep) and st.phase == Phase.EVENT and after.event != st.event:
        waits = "no event" if after.event is None else f"event {after.event!r}"
        yield f"step {was!r} waits for event {st.event!r}; in {version} {now!r} waits for {waits}"
    if isinstance(before, models.SubworkflowStep) and isinstance(after, models.SubworkflowStep):
        if st.phase in (Phase.CHILD, Phase.CHILD_WAIT) and to != path:
            yield (
                f"step {was!r} is {_doing(st)}, whose id holds the step's path: "
                "it cannot be renamed while the child runs"
            )
        if st.status in _IN_FLIGHT and before.workflow != after.workflow:
            yield (
                f"step {was!r} is {_doing(st)} (workflow {before.workflow!r}); in {version} "
                f"{now!r} starts workflow {after.workflow!r}"
            )
    if (
        isinstance(before, models.MapStep)
        and isinstance(after, models.MapStep)
        and st.phase == Phase.BRANCHES
        and before.iterator.name != after.iterator.name
    ):
        yield (
            f"map {was!r} has items in flight under iterator {before.iterator.name!r}; in "
            f"{version} {now!r} iterates as {after.iterator.name!r}"
        )
    if (
        isinstance(after, models.TaskStep)
        and after.input_schema is not None
        and st.status in _IN_FLIGHT
        and st.phase in _RESUMES
    ):
        try:
            schemas.conform(st.input, after.input_schema)
        except schemas.Mismatch as exc:
            yield (
                f"the input of step {was!r} does not match the input schema of {now!r} in "
                f"{version} ({schemas.label(after.input_schema)}): {exc}"
            )


def _position(
    new: Plan, moved: State, to: str, now: str, version: str, before_deps: set[str]
) -> Iterator[str]:
    """The moved step still leads to an end: in a DAG every dependency it gains in the new
    version has run; in a sequence some end can be reached from it."""
    node = new.nodes[now]
    prefix = to[: len(to) - len(node.step.name)]
    if node.scope.dag:
        for dep in node.step.depends_on:
            record = moved.peek(prefix + dep)
            if prefix + dep not in before_deps and (
                record is None or record.status == StepStatus.PENDING
            ):
                yield (
                    f"step {now!r} depends on {dep!r} in {version}, which has not run: "
                    "it would never start"
                )
    elif now not in _ending(new, node.scope.prefix):
        yield f"from step {now!r} no end of its scope can be reached in {version}"


def _ending(plan: Plan, prefix: str) -> set[str]:
    """Template paths of the scope's steps from which the scope can end."""
    scope = plan.scopes[prefix]
    steps = scope.steps
    edges = [(a, b) for a, b, label in graph.edges(steps) if label != graph.ERROR_LABEL]
    forward: dict[str, list[str]] = {s.name: [] for s in steps}
    for a, b in edges:
        forward.setdefault(a, []).append(b)
    handlers = graph.error_targets(steps)
    ends = [
        s.name
        for i, s in enumerate(steps)
        if not isinstance(s, models.ChoiceStep)
        and graph.sequential_next(steps, i, handlers) is None
    ]
    back = graph.reverse(forward)
    return {prefix + name for name in graph.reachable(ends, back)}


def _loop_of(old: Plan, key: str) -> str | None:
    """The loop step (concrete path) whose iterations are counted under ``key``, its target."""
    template = template_path(key)
    head = key[: len(key) - len(key.rsplit("/", 1)[-1])]
    for path, node in old.nodes.items():
        step = node.step
        if isinstance(step, models.LoopStep) and node.scope.prefix + step.target == template:
            return head + path[len(node.scope.prefix) :]
    return None


def _loops(
    old: Plan, new: Plan, state: State, mapping: Mapping[str, str], version: str
) -> Iterator[str]:
    for key, count in state.loops.items():
        loop = _loop_of(old, key)
        if loop is None:
            continue
        was, now = template_path(loop), template_path(rename(loop, mapping))
        node = new.nodes.get(now)
        if node is None or not isinstance(node.step, models.LoopStep):
            what = "no such step" if node is None else f"a {node.step.kind} step"
            yield f"loop {was!r} is in flight ({count} iterations); {now!r} in {version} is {what}"
            continue
        target = template_path(rename(key, mapping))
        if node.scope.prefix + node.step.target != target:
            yield (
                f"loop {was!r} is in flight going back to {template_path(key)!r}; in {version} "
                f"{now!r} goes back to {node.scope.prefix + node.step.target!r}"
            )
        limit = node.step.max_iterations
        if limit is not None and count > limit:
            yield f"loop {was!r} has run {count} iterations; in {version} {now!r} allows {limit}"


def _branches(
    old: Plan, new: Plan, state: State, mapping: Mapping[str, str], version: str
) -> Iterator[str]:
    """A parallel in flight keeps every branch still running."""
    for path, by_branch in state.branches.items():
        st = state.peek(path)
        old_node = old.nodes.get(template_path(path))
        if st is None or st.status not in _IN_FLIGHT or old_node is None or MAP in by_branch:
            continue
        now = template_path(rename(path, mapping))
        node = new.nodes.get(now)
        if node is None or not isinstance(node.step, models.ParallelStep):
            continue  # said by the step's own check
        names = {br.name for br in node.step.branches}
        for name, record in by_branch.items():
            if record.get("status") == StepStatus.RUNNING and name not in names:
                yield (
                    f"parallel {template_path(path)!r} has branch {name!r} running; in "
                    f"{version} {now!r} has no branch {name!r}"
                )


def _compensations(
    new: Plan, state: State, mapping: Mapping[str, str], version: str
) -> Iterator[str]:
    """Every step still to be undone (and the one being undone) keeps its compensation."""
    running = [base_path(p) for p in state.active if is_compensation(p)]
    for path in dict.fromkeys(running + state.compensations):
        was, now = template_path(path), template_path(rename(path, mapping))
        node = new.nodes.get(now)
        if node is None:
            yield f"step {was!r} is still to be compensated and {version} has no step {now!r}"
        elif not isinstance(node.step, models.TaskStep) or node.step.compensate is None:
            yield f"step {was!r} is still to be compensated; in {version} {now!r} has no compensate"
