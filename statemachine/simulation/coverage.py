"""Which parts of a workflow's graph a run went through, read back from its history.

The graph is every edge of every scope (``graph.edges``' rules, written once there), plus what a
reader of the diagram also sees as a way through: a parallel's or map's entry into each branch,
and a sequential scope's exit (``end``). A run's history has no "edge" entries, so edges are
inferred: in a sequential scope, consecutive starts of the same scope instance are the edge
between them (the earlier step's last event tells an error branch or a loop's back-edge apart
when both lead to the same step); in a DAG, a dependency edge is taken when its step starts
after its dependency ran; a branch entry when a step of that branch starts. Only the public
read models (``HistoryEntry``) are read: the engine's internals may change under it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from statemachine import HistoryEntry
from statemachine.definition import graph, models

# the kinds of edge, in the order a report lists them
KINDS = ("next", "choice", "default", "dependency", "error", "loop", "branch", "end")
# the entries that say where a step stands (progress, logs and custom events carry a step too)
_OUTCOMES = frozenset(
    f"workflow.step.{kind}" for kind in ("started", "completed", "failed", "skipped", "loop")
)
_ITEM = re.compile(r"@\d+(?=/|$)")  # a map item's index in a step path: send-all/recipient@0/send


@dataclass(frozen=True)
class Edge:
    """One way through the graph between step paths; ``target`` None is the scope's end."""

    source: str
    target: str | None
    kind: str
    label: str = ""

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.source, self.target or "", self.kind, self.label)

    def __str__(self) -> str:
        to = "end" if self.target is None else self.target
        label = f" [{self.kind}: {self.label}]" if self.label else f" [{self.kind}]"
        return f"{self.source} -> {to}{label}"


@dataclass(frozen=True)
class RulePoint:
    """A DAG step with dependencies, whose trigger rule decides whether it runs."""

    step: str
    rule: str


@dataclass
class Trace:
    """What one run went through: steps started (first start order), edges, rule decisions."""

    steps: list[str] = field(default_factory=list)
    edges: set[Edge] = field(default_factory=set)
    rules: dict[str, set[str]] = field(default_factory=dict)  # step -> {"ran", "skipped:..."}


def graph_edges(definition: models.WorkflowDefinition) -> list[Edge]:
    """Every edge of the definition, nested scopes included, in graph order."""
    return list(_scope_edges(definition.steps, ""))


def rule_points(definition: models.WorkflowDefinition) -> list[RulePoint]:
    return [RulePoint(path, s.trigger) for path, s in _dag_steps(definition.steps, "")]


def _dag_steps(
    steps: Sequence[models.StepBase], prefix: str
) -> Iterable[tuple[str, models.StepBase]]:
    dag = graph.is_dag_scope(steps)
    for step in steps:
        path = prefix + step.name
        if dag and step.depends_on:
            yield path, step
        for br in models.child_branches(step):
            yield from _dag_steps(br.steps, f"{path}/{br.name}/")


def _scope_edges(steps: Sequence[models.StepBase], prefix: str) -> Iterable[Edge]:
    dag = graph.is_dag_scope(steps)
    handlers = graph.error_targets(steps)
    for i, step in enumerate(steps):
        path = prefix + step.name
        if dag:
            yield from (Edge(prefix + d, path, "dependency") for d in step.depends_on)
        elif isinstance(step, models.ChoiceStep):
            for rule in step.choices:
                yield Edge(path, prefix + rule.next, "choice", graph.label_of(rule.condition))
            if step.default:
                yield Edge(path, prefix + step.default, "default")
        else:
            if isinstance(step, models.LoopStep):
                yield Edge(path, prefix + step.target, "loop", graph.label_of(step.condition))
            nxt = graph.sequential_next(steps, i, handlers)
            yield Edge(
                path, None if nxt is None else prefix + nxt, "end" if nxt is None else "next"
            )
        if step.on_error == "branch" and step.error_next:
            yield Edge(path, prefix + step.error_next, "error")
        for br in models.child_branches(step):
            inner = f"{path}/{br.name}/"
            for root in graph.roots(br.steps):
                yield Edge(path, inner + root, "branch", br.name)
            yield from _scope_edges(br.steps, inner)


def plain(path: str) -> str:
    """A step path without map item indices: ``send-all/recipient@0/send`` -> ``.../recipient/send``."""
    return _ITEM.sub("", path)


def trace(definition: models.WorkflowDefinition, history: Sequence[HistoryEntry]) -> Trace:
    """What the run whose ``history`` this is went through, against ``definition``'s graph."""
    edges = graph_edges(definition)
    out_of: dict[str, list[Edge]] = {}
    for edge in edges:
        out_of.setdefault(edge.source, []).append(edge)
    index = definition.step_index()
    rules = {p.step for p in rule_points(definition)}
    dag_scopes = {_scope(path) for path, step in index.items() if step.depends_on}
    found = Trace()
    last_in_scope: dict[str, str] = {}  # scope instance -> exact path of its latest start
    last_event: dict[str, str] = {}  # exact path -> type of its latest entry
    started: set[str] = set()  # exact paths
    for entry in history:
        path = entry.step
        if not path or "#" in path:  # instance-level entries, compensations
            continue
        name = plain(path)
        if name not in index:
            continue
        if entry.type == "workflow.step.skipped" and name in rules:
            found.rules.setdefault(name, set()).add(f"skipped: {_reason(entry)}")
        if entry.type in ("workflow.step.started", "workflow.step.skipped"):
            scope = _scope(path)
            ran = entry.type == "workflow.step.started"
            if ran and name not in found.steps:
                found.steps.append(name)
            if ran and name in rules:
                found.rules.setdefault(name, set()).add("ran")
            if _scope(name) in dag_scopes:
                if ran:
                    found.edges.update(_dag_in(out_of, name, path, started, last_event))
            else:
                before = last_in_scope.get(scope)
                if before is not None and before != path:
                    found.edges.update(_between(out_of, before, name, last_event.get(before)))
                last_in_scope[scope] = path
            if ran:
                found.edges.update(_entry(out_of, scope, name))
                started.add(path)
        if entry.type in _OUTCOMES:
            last_event[path] = entry.type
    for path in last_in_scope.values():
        found.edges.update(_ended(out_of, index, path, last_event.get(path)))
    return found


def _scope(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _reason(entry: HistoryEntry) -> str:
    data = entry.data if isinstance(entry.data, dict) else {}
    reason = data.get("reason")
    return str(reason.get("kind") if isinstance(reason, dict) else reason or "unknown")


def _between(out_of: dict[str, list[Edge]], before: str, name: str, how: str | None) -> set[Edge]:
    """The edge from the previous start of a sequential scope to ``name``: the one its last
    event says was taken (failed: the error branch; looped: the back-edge)."""
    source = plain(before)
    options = [e for e in out_of.get(source, []) if e.target == name]
    if len(options) > 1:
        wanted = {"workflow.step.failed": "error", "workflow.step.loop": "loop"}.get(how or "")
        preferred = [e for e in options if e.kind == wanted] if wanted else []
        ordinary = [e for e in options if e.kind not in ("error", "loop")]
        options = preferred or ordinary or options
    return set(options[:1])


def _dag_in(
    out_of: dict[str, list[Edge]],
    name: str,
    path: str,
    started: set[str],
    last_event: dict[str, str],
) -> set[Edge]:
    """Edges into a DAG step that starts: each dependency that ran, and the error branch of a
    step that failed."""
    prefix = path[: len(path) - len(name.rsplit("/", 1)[-1])]
    taken: set[Edge] = set()
    for source, edges in out_of.items():
        for edge in edges:
            if edge.target != name:
                continue
            exact = prefix + source.rsplit("/", 1)[-1]
            ran = edge.kind == "dependency" and exact in started
            failed = edge.kind == "error" and last_event.get(exact) == "workflow.step.failed"
            if ran or failed:
                taken.add(edge)
    return taken


def _entry(out_of: dict[str, list[Edge]], scope: str, name: str) -> set[Edge]:
    """A branch's entry edge, when ``name`` is a root of a parallel branch or map iterator."""
    if not scope:
        return set()
    parent = plain(scope).rsplit("/", 1)[0]
    return {e for e in out_of.get(parent, []) if e.kind == "branch" and e.target == name}


def _ended(
    out_of: dict[str, list[Edge]],
    index: Mapping[str, models.StepBase],
    path: str,
    how: str | None,
) -> set[Edge]:
    """The end edge of a sequential scope whose latest step finished and leads nowhere."""
    name = plain(path)
    step = index.get(name)
    finished = how in ("workflow.step.completed", "workflow.step.skipped") or (
        how == "workflow.step.failed" and step is not None and step.on_error == "continue"
    )
    if not finished:
        return set()
    return {e for e in out_of.get(name, []) if e.kind == "end"}
