"""A definition as nested scopes of nodes and edges, with a row per node, for the dashboard.

Rows come from the longest path over forward edges; an edge that closes a cycle (a loop going
back to its target) is marked ``back`` and does not push rows down.
"""

from __future__ import annotations

from collections.abc import Sequence

from statemachine.definition import graph, models
from statemachine.server import schemas


def workflow_graph(definition: models.WorkflowDefinition) -> schemas.GraphScope:
    return scope_graph(definition.steps, "", None)


def scope_graph(
    steps: Sequence[models.StepBase], prefix: str, name: str | None
) -> schemas.GraphScope:
    local = graph.edges(steps)
    back = back_edges([s.name for s in steps], graph.roots(steps), local)
    rows = layers([s.name for s in steps], [(a, b) for a, b, _ in local if (a, b) not in back])
    nodes = [
        schemas.GraphNode(
            path=prefix + step.name,
            name=step.name,
            kind=step.kind,
            layer=rows[step.name],
            description=step.description,
            branches=[
                scope_graph(br.steps, f"{prefix}{step.name}/{br.name}/", br.name)
                for br in models.child_branches(step)
            ],
        )
        for step in steps
    ]
    edges = [
        schemas.GraphEdge(
            source=prefix + a,
            target=prefix + b,
            label=label,
            kind="back" if (a, b) in back else "error" if label == graph.ERROR_LABEL else "next",
        )
        for a, b, label in local
    ]
    return schemas.GraphScope(name=name, steps=nodes, edges=edges)


def back_edges(
    names: Sequence[str], roots: Sequence[str], edges: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """Edges that reach a step still on the depth-first path: the ones closing a cycle."""
    out: dict[str, list[str]] = {n: [] for n in names}
    for a, b, _ in edges:
        if a in out and b in out:
            out[a].append(b)
    found: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for root in [*roots, *names]:
        if state.get(root):
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, todo = stack[-1]
            nxt = next(todo, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                found.add((node, nxt))
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(out[nxt])))
    return found


def layers(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Longest-path rows of an acyclic graph; steps with no predecessor are on row 0."""
    preds: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        if a in preds and b in preds and a != b:
            preds[b].append(a)
    rows: dict[str, int] = {}
    for name in names:
        stack = [name]
        while stack:
            node = stack[-1]
            if node in rows:
                stack.pop()
                continue
            waiting = [p for p in preds[node] if p not in rows]
            if waiting:
                stack.extend(waiting)
                continue
            rows[node] = max((rows[p] + 1 for p in preds[node]), default=0)
            stack.pop()
    return rows
