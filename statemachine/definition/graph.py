"""Pure graph questions about one scope of steps: successors, DAG-ness, cycles, reachability.

The interpreter, validation and rendering all ask these; keeping them here means the rules of
flow ("no ``next`` means the following step") are written once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from statemachine.definition import parts

Edge = tuple[str, str, str]  # (source, target, label)
ERROR_LABEL = "on error"  # the label of an errorBranch edge


def is_dag_scope(steps: Sequence[parts.StepBase]) -> bool:
    return any(step.depends_on for step in steps)


def error_targets(steps: Sequence[parts.StepBase]) -> set[str]:
    return {s.error_next for s in steps if s.on_error == "branch" and s.error_next}


def sequential_next(
    steps: Sequence[parts.StepBase], index: int, handlers: Collection[str] | None = None
) -> str | None:
    """The step that follows ``steps[index]`` on success in a sequential scope (None: scope ends).

    Without a ``next``, the following step written, passing over error-branch targets
    (``handlers``, the scope's ``error_targets``): a handler runs only on its error, so
    workflow.do's "fallback, then notify-admin on failure" never pages on a success.
    """
    step = steps[index]
    if step.end:
        return None
    if step.next is not None:
        return step.next
    skip = error_targets(steps) if handlers is None else handlers
    for later in steps[index + 1 :]:
        if later.name not in skip:
            return later.name
    return None


def edges(steps: Sequence[parts.StepBase]) -> list[Edge]:
    """Every edge of one scope, labelled for rendering."""
    out: list[Edge] = []
    dag = is_dag_scope(steps)
    handlers = error_targets(steps)
    for i, step in enumerate(steps):
        if dag:
            out.extend((dep, step.name, "") for dep in step.depends_on)
        elif isinstance(step, parts.ChoiceStep):
            for rule in step.choices:
                out.append((step.name, rule.next, label_of(rule.condition)))
            if step.default:
                out.append((step.name, step.default, "default"))
        else:
            if isinstance(step, parts.LoopStep):
                out.append((step.name, step.target, f"while {label_of(step.condition)}"))
            nxt = sequential_next(steps, i, handlers)
            if nxt is not None:
                out.append((step.name, nxt, ""))
        if step.on_error == "branch" and step.error_next:
            out.append((step.name, step.error_next, ERROR_LABEL))
    return out


def label_of(value: object) -> str:
    if isinstance(value, str):
        return value
    return str(getattr(value, "__qualname__", type(value).__name__))


def roots(steps: Sequence[parts.StepBase]) -> list[str]:
    """Where a scope starts: the first step, or in a DAG every step with no dependencies."""
    if not steps:
        return []
    if not is_dag_scope(steps):
        return [steps[0].name]
    handlers = error_targets(steps)
    return [s.name for s in steps if not s.depends_on and s.name not in handlers]


def graph_order(steps: Sequence[parts.StepBase]) -> list[str]:
    """The scope's steps in the order they can run: as written in a sequential scope; in a DAG,
    in waves (steps whose dependencies, and error branches' failing steps, are in earlier
    waves), each wave as written."""
    if not is_dag_scope(steps):
        return [s.name for s in steps]
    names = {s.name for s in steps}
    left = {s.name: {d for d in s.depends_on if d in names and d != s.name} for s in steps}
    for s in steps:
        if s.on_error == "branch" and s.error_next in left and s.error_next != s.name:
            left[s.error_next].add(s.name)
    order: list[str] = []
    while left:
        ready = [s.name for s in steps if s.name in left and not left[s.name]]
        if not ready:  # a cycle (refused by validation): the rest as written
            ready = [s.name for s in steps if s.name in left]
        for name in ready:
            del left[name]
            order.append(name)
        for deps in left.values():
            deps.difference_update(ready)
    return order


def reachable(start: Iterable[str], adjacency: Mapping[str, Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(adjacency.get(node, ()))
    return seen


def find_cycle(adjacency: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a list of nodes (first == last), or None; iterative, so deep graphs are fine."""
    color: dict[str, int] = {}
    parent: dict[str, str] = {}
    for root in adjacency:
        if color.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, list(adjacency.get(root, ())))]
        color[root] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                color[node] = 2
                stack.pop()
                continue
            nxt = pending.pop()
            state = color.get(nxt, 0)
            if state == 0:
                color[nxt] = 1
                parent[nxt] = node
                stack.append((nxt, list(adjacency.get(nxt, ()))))
            elif state == 1:
                cycle = [nxt, node]
                cur = node
                while cur != nxt:
                    cur = parent[cur]
                    cycle.append(cur)
                cycle.reverse()
                return cycle
    return None


def reverse(adjacency: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The same graph with every edge turned around."""
    out: dict[str, list[str]] = {}
    for node, targets in adjacency.items():
        for target in targets:
            out.setdefault(target, []).append(node)
    return out


def components(adjacency: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components that hold a cycle (a self-edge counts); linear time.

    Tarjan's algorithm, iterative so deep graphs are fine; members are listed in the order the
    search met them, and components in the order they were completed.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in adjacency:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, list(adjacency.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, list(adjacency.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] != index[node]:
                continue
            members: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or any(t == node for t in adjacency.get(node, ())):
                found.append(sorted(members, key=index.__getitem__))
    return found


def cycles(adjacency: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (first == last) per component of ``components``; linear time in all."""
    found: list[list[str]] = []
    for members in components(adjacency):
        inside = set(members)
        sub = {n: [t for t in adjacency.get(n, ()) if t in inside] for n in members}
        cycle = find_cycle(sub)
        if cycle is not None:
            found.append(cycle)
    return found
