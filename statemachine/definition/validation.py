"""Every rule a definition must follow beyond its field types, all reported at once.

``validate`` never raises and never stops at the first problem: it walks each scope (the top
level, every parallel branch and map iterator) and yields one ``Issue`` per problem, located in
YAML terms (``steps[2].dependsOn[0]``) with a stable ``code``. Graph questions go to ``graph``;
expressions are compiled (once per distinct text) by ``expressions``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine import errors
from statemachine.definition import (
    expressions,
    field_rules,
    flow_check,
    flow_control,
    graph,
    issues,
    models,
    schedule_check,
)

Loc = issues.Loc

# names every expression may read; step names of the visible scopes are added per scope
BASE_NAMES = frozenset({"input", "steps", "prev", "metadata", "event"})
ITERATOR_NAMES = frozenset({"item", "index"})


@dataclass(frozen=True)
class _Scope:
    steps: tuple[models.StepBase, ...]
    loc: Loc  # where the steps list sits, e.g. ("steps", 3, "branches", 0, "steps")
    known: frozenset[str]  # names an expression may read in this scope
    what: str  # "workflow", "branch" or "iterator", for messages


def validate(definition: models.WorkflowDefinition, *, flow: bool = True) -> list[errors.Issue]:
    """Every problem of ``definition``, in a stable order; empty when it is sound. ``flow``:
    also check the typed data flow (not for a stored copy that was checked when registered)."""
    found: list[errors.Issue] = []
    found.extend(field_rules.positive(definition.timeout, ("timeout",)))
    if definition.default_retry is not None:
        found.extend(field_rules.retry(definition.default_retry, ("defaultRetry",)))
    for i, trigger in enumerate(definition.triggers):
        if trigger.condition is not None:
            # syntax only: the event data's top-level keys are names too, unknown until it arrives
            result = _compiled(trigger.condition)
            if isinstance(result, str):
                found.append(
                    field_rules.issue("bad_expression", ("triggers", i, "condition"), result)
                )
    found.extend(schedule_check.check(definition))
    found.extend(flow_control.issues_of(definition))
    steps = tuple(definition.steps)
    top = _Scope(steps, ("steps",), BASE_NAMES | {s.name for s in steps}, "workflow")
    found.extend(_scope(top))
    if flow:  # typed data flow: schemas along every edge
        found.extend(flow_check.check(definition))
    return found


# --- one scope ------------------------------------------------------------------------------


def _scope(scope: _Scope) -> Iterator[errors.Issue]:
    steps = scope.steps
    if not steps:
        yield field_rules.issue("empty_scope", scope.loc, f"this {scope.what} has no steps")
        return
    first: dict[str, int] = {}  # name -> index of its first step
    for i, step in enumerate(steps):
        yield from _name("step", step.name, (*scope.loc, i, "id"))
        if step.name in first:
            where = issues.format_loc((*scope.loc, first[step.name]))
            msg = f"duplicate step name {step.name!r} (first at {where})"
            yield field_rules.issue("duplicate_name", (*scope.loc, i, "id"), msg)
        else:
            first[step.name] = i
    dag = graph.is_dag_scope(steps)
    for i, step in enumerate(steps):
        loc = (*scope.loc, i)
        yield from _references(step, i, loc, first)
        if dag:
            yield from _mixing(step, loc)
        elif step.trigger != models.DEFAULT_TRIGGER_RULE:
            msg = f"trigger {step.trigger!r} has no effect: trigger rules need dependsOn"
            yield field_rules.issue("trigger_rule", (*loc, "trigger"), msg)
        yield from _step_rules(step, loc)
        yield from _step_expressions(step, loc, scope.known)
        yield from _children(step, loc, scope.known)
    if dag:
        yield from _dag(steps, scope.loc, first)
    elif not any(isinstance(step, models.BrokenStep) for step in steps):
        # a broken step's own edges (choices, loop target) are unknown: reachability and
        # "no way to finish" would be guesses, so they wait for its fields to be fixed
        yield from _flow(steps, scope.loc, first)


# The engine builds internal paths from names: "/" joins scopes, "@" numbers map items,
# "#" marks a step's compensation ("charge#compensate"); a name holding one would collide.
RESERVED = frozenset("/#@")


def _bad_char(c: str) -> bool:
    return c in RESERVED or c.isspace() or not c.isprintable() or "\ud800" <= c <= "\udfff"


def _name(what: str, name: str, loc: Loc) -> Iterator[errors.Issue]:
    if not name or any(_bad_char(c) for c in name):
        msg = (
            f"{what} name {name!r} must be non-empty, without whitespace, control characters "
            "or any of '/', '#', '@' (the engine uses them in step paths)"
        )
        yield field_rules.issue("bad_name", loc, msg)


def _children(step: models.StepBase, loc: Loc, known: frozenset[str]) -> Iterator[errors.Issue]:
    if isinstance(step, models.ParallelStep):
        if not step.branches:
            msg = "a parallel step needs at least one branch"
            yield field_rules.issue("empty_parallel", (*loc, "branches"), msg)
        seen: set[str] = set()
        for j, br in enumerate(step.branches):
            bloc = (*loc, "branches", j)
            yield from _name("branch", br.name, (*bloc, "name"))
            if br.name in seen:
                msg = f"duplicate branch name {br.name!r} in {step.name!r}"
                yield field_rules.issue("duplicate_name", (*bloc, "name"), msg)
            seen.add(br.name)
            inner = known | {s.name for s in br.steps}
            yield from _scope(_Scope(br.steps, (*bloc, "steps"), inner, "branch"))
    elif isinstance(step, models.MapStep):
        bloc = (*loc, "iterator")
        yield from _name("iterator", step.iterator.name, (*bloc, "name"))
        inner = known | ITERATOR_NAMES | {s.name for s in step.iterator.steps}
        yield from _scope(_Scope(step.iterator.steps, (*bloc, "steps"), inner, "iterator"))


def _unknown(target: str, key: str, loc: Loc, first: Mapping[str, int]) -> Iterator[errors.Issue]:
    if target not in first:
        hint = issues.did_you_mean(target, first)
        yield field_rules.issue("unknown_reference", loc, f"unknown step {target!r} in {key}{hint}")


def _references(
    step: models.StepBase, i: int, loc: Loc, first: Mapping[str, int]
) -> Iterator[errors.Issue]:
    if step.next is not None:
        yield from _unknown(step.next, "next", (*loc, "next"), first)
    if step.error_next is not None:
        yield from _unknown(step.error_next, "errorBranch", (*loc, "errorBranch"), first)
    for j, dep in enumerate(step.depends_on):
        if dep == step.name:
            msg = f"step {dep!r} depends on itself"
            yield field_rules.issue("self_reference", (*loc, "dependsOn", j), msg)
        else:
            yield from _unknown(dep, "dependsOn", (*loc, "dependsOn", j), first)
    if isinstance(step, models.ChoiceStep):
        if not step.choices:
            msg = "a choice step needs at least one choice"
            yield field_rules.issue("empty_choice", (*loc, "choices"), msg)
        for k, rule in enumerate(step.choices):
            yield from _unknown(rule.next, "next", (*loc, "choices", k, "next"), first)
        if step.default is not None:
            yield from _unknown(step.default, "default", (*loc, "default"), first)
    if isinstance(step, models.LoopStep):
        yield from _unknown(step.target, "target", (*loc, "target"), first)
        if first.get(step.target, -1) > i:
            msg = f"loop target {step.target!r} comes after the loop; "
            msg += "it must be the loop itself or an earlier step"
            yield field_rules.issue("loop_target_forward", (*loc, "target"), msg)


def _mixing(step: models.StepBase, loc: Loc) -> Iterator[errors.Issue]:
    lead = "this scope uses dependsOn (a DAG), so next/choice/loop cannot be used here; "
    if isinstance(step, models.ChoiceStep | models.LoopStep):
        msg = f"{lead}{step.kind} step {step.name!r}: use a step condition instead"
        yield field_rules.issue("scope_mixing", (*loc, "type"), msg)
    if step.next is not None:
        hint = f"remove next and list {step.name!r} in the dependsOn of {step.next!r}"
        yield field_rules.issue("scope_mixing", (*loc, "next"), lead + hint)
    if step.end:
        msg = lead + "remove end: a DAG ends when no step is left to run"
        yield field_rules.issue("scope_mixing", (*loc, "end"), msg)


# --- rules about one step -------------------------------------------------------------------


def _step_rules(step: models.StepBase, loc: Loc) -> Iterator[errors.Issue]:
    if step.on_error == "branch" and not step.error_next:
        msg = "onError: branch needs errorBranch naming the step to run"
        yield field_rules.issue("error_branch", (*loc, "onError"), msg)
    if step.error_next and step.on_error != "branch":
        msg = f"errorBranch is only used with onError: branch (not onError: {step.on_error})"
        yield field_rules.issue("error_branch", (*loc, "errorBranch"), msg)
    match step:
        case models.TaskStep():
            yield from field_rules.positive(step.timeout, (*loc, "timeout"))
            if step.retry is not None:
                yield from field_rules.retry(step.retry, (*loc, "retry"))
        case models.PollStep():
            if step.timeout is None and step.max_attempts is None:
                msg = "a poll step needs timeout or maxAttempts, or it may poll forever"
                yield field_rules.issue("poll_unbounded", loc, msg)
            if not step.interval > 0:
                msg = "the poll interval must be greater than 0"
                yield field_rules.issue("poll_interval", (*loc, "interval"), msg)
            yield from field_rules.positive(step.timeout, (*loc, "timeout"))
        case models.LoopStep():
            if step.max_iterations is None and step.timeout is None:
                msg = "a loop step needs maxIterations or timeout, or it may loop forever"
                yield field_rules.issue("loop_unbounded", loc, msg)
            yield from field_rules.positive(step.timeout, (*loc, "timeout"))
        case models.WaitStep():
            yield from field_rules.wait(step, loc)
        case models.SubworkflowStep():
            if not step.workflow.strip():
                msg = "a subworkflow step needs the workflow name"
                yield field_rules.issue("subworkflow", (*loc, "workflow"), msg)


# --- expressions ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> frozenset[str] | str:
    """The names ``source`` reads, or the compile error's message."""
    try:
        return expressions.compile_expression(source).names
    except errors.ExpressionError as exc:
        return str(exc)


@functools.lru_cache(maxsize=4096)
def _template_names(text: str) -> frozenset[str] | str:
    """The names every ``${{ }}`` in ``text`` reads, or the first compile error's message."""
    try:
        found = expressions.find_templates(text)
    except errors.ExpressionError as exc:
        return str(exc)
    return frozenset().union(*(template.names for _, template in found))


def _names(
    names: frozenset[str], source: str, loc: Loc, known: frozenset[str]
) -> Iterator[errors.Issue]:
    for name in sorted(names - known):
        hint = issues.did_you_mean(name, known)
        yield field_rules.issue(
            "unknown_name", loc, f"unknown name {name!r} in expression {source!r}{hint}"
        )


def _expression(source: Any, loc: Loc, known: frozenset[str]) -> Iterator[errors.Issue]:
    if not isinstance(source, str):
        return  # a callable: nothing to compile
    result = _compiled(source)
    if isinstance(result, str):
        yield field_rules.issue("bad_expression", loc, result)
    else:
        yield from _names(result, source, loc, known)


def _templates(value: Any, loc: Loc, known: frozenset[str]) -> Iterator[errors.Issue]:
    """Check every ``${{ }}`` string inside a nested input/result value, each at its own place."""
    todo: list[tuple[Loc, Any]] = [(loc, value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            if expressions.is_template(item):
                result = _template_names(item)
                if isinstance(result, str):
                    yield field_rules.issue("bad_expression", where, result)
                else:
                    yield from _names(result, item, where, known)
        elif isinstance(item, Mapping):
            todo.extend(((*where, str(k)), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            todo.extend(((*where, j), v) for j, v in reversed(list(enumerate(item))))


def _is_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _step_expressions(
    step: models.StepBase, loc: Loc, known: frozenset[str]
) -> Iterator[errors.Issue]:
    yield from _expression(step.condition, (*loc, "condition"), known)
    match step:
        case models.ChoiceStep():
            for k, rule in enumerate(step.choices):
                yield from _expression(rule.condition, (*loc, "choices", k, "condition"), known)
        case models.MapStep():
            yield from _expression(step.items, (*loc, "items"), known)
        case models.BrokenStep():
            yield from _templates(step.input, (*loc, "input"), known)
        case models.PassStep():
            yield from _expression(step.transform, (*loc, "transform"), known)
            yield from _templates(step.result, (*loc, "result"), known)
        case models.WaitStep():
            if isinstance(step.until, str) and not _is_timestamp(step.until):
                yield from _expression(step.until, (*loc, "until"), known)
        case models.TaskStep() | models.PollStep() | models.SubworkflowStep():
            yield from _templates(step.input, (*loc, "input"), known)


# --- flow of a whole scope ------------------------------------------------------------------


def _dag(
    steps: Sequence[models.StepBase], loc: Loc, first: Mapping[str, int]
) -> Iterator[errors.Issue]:
    needs = {  # a duplicate name is reported already; its first step stands for it
        s.name: [d for d in s.depends_on if d in first and d != s.name]
        for i, s in enumerate(steps)
        if first[s.name] == i
    }
    for cycle in graph.cycles(needs):
        ring = cycle[:-1]
        start = min(range(len(ring)), key=lambda k: first[ring[k]])
        ring = ring[start:] + ring[:start]
        owner = steps[first[ring[0]]]
        at = owner.depends_on.index(ring[1 % len(ring)])
        text = " -> ".join([*ring, ring[0]])
        yield field_rules.issue(
            "cycle", (*loc, first[ring[0]], "dependsOn", at), f"dependsOn cycle: {text}"
        )


def _flow(
    steps: Sequence[models.StepBase], loc: Loc, first: Mapping[str, int]
) -> Iterator[errors.Issue]:
    every: dict[str, list[str]] = {}
    normal: dict[str, list[str]] = {}  # without error edges: an error is no way to finish
    ends: set[str] = set()
    for src, dst, label in graph.edges(steps):
        every.setdefault(src, []).append(dst)
        if label != graph.ERROR_LABEL:
            normal.setdefault(src, []).append(dst)
        if dst not in first:
            ends.add(src)  # already an unknown_reference; do not pile a no_end on top
    handlers = graph.error_targets(steps)
    for i, step in enumerate(steps):
        if isinstance(step, models.ChoiceStep):  # no default: it may fail, but it does not end
            dead = not step.choices and step.default is None  # already an empty_choice
        else:
            dead = graph.sequential_next(steps, i, handlers) is None
        if dead:
            ends.add(step.name)
    reach = graph.reachable([steps[0].name], every)
    for i, step in enumerate(steps):
        if step.name not in reach and first[step.name] == i:
            msg = f"step {step.name!r} can never run: no next, choice, loop or error leads to it"
            yield field_rules.issue("unreachable", (*loc, i), msg)
    can_end = graph.reachable(ends, graph.reverse(normal))
    stuck = {n for n in reach if n in first and n not in can_end}
    if stuck:
        inside = {n: [t for t in normal.get(n, ()) if t in stuck] for n in stuck}
        caught = sorted(
            {n for c in graph.components(inside) for n in c} or stuck, key=first.__getitem__
        )
        names = ", ".join(repr(n) for n in caught)
        hint = "add end: true, a choice default, or a next that leaves the loop"
        msg = f"these steps loop with no way to finish: {names}; {hint}"
        yield field_rules.issue("no_end", (*loc, first[caught[0]]), msg)
