"""A definition indexed for running: every step path with its scope, position and neighbours.

Built once per definition (cached), so the interpreter never re-walks or re-validates the graph.
A map item's scopes and nodes (paths with ``@i``) are derived from the iterator's on demand and
not kept with the plan: a plan lives as long as the process, and items are without number. The
last ``ITEM_SCOPES_KEPT`` are cached, and one still held by its caller is found again (the
interpreter compares scopes by identity).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime

from statemachine.definition import graph, models

_ITEM = re.compile(r"@\d+/")
_INDEX = re.compile(r"@(\d+)/")
_NEVER = datetime.max.replace(tzinfo=UTC)
ITEM_SCOPES_KEPT = 256  # item scopes a plan keeps after their use, most recent first


def template_path(path: str) -> str:
    """``each/it@3/send`` -> ``each/it/send``: the path a map item's step has in the definition."""
    return _ITEM.sub("/", path)


def item_prefix(map_path: str, step: models.MapStep, index: int) -> str:
    """``map/iterator@index/``: the prefix of item ``index``'s steps, and the path of the
    record of its result (a path no step has: names hold no ``/``)."""
    return f"{map_path}/{step.iterator.name}@{index}/"


OrderKey = tuple[datetime, int, tuple[int, ...], str]


def order_key(
    path: str, started_at: datetime | None, completed_at: datetime | None, rank: int
) -> OrderKey:
    """Where a step is listed among an instance's steps: by when it started (a skipped or
    cancelled step never started: when it was decided; one not decided yet: last), ties by
    ``rank`` (its place in the graph's order), then map items by index; never by name alone."""
    items = tuple(int(i) for i in _INDEX.findall(path))
    return started_at or completed_at or _NEVER, rank, items, path


@dataclass(frozen=True)
class Scope:
    prefix: str  # "" for the top level, "fulfill/shipping/" for a branch
    steps: tuple[models.StepBase, ...]
    parent: str | None  # path of the parallel/map step that owns this scope
    branch: str | None
    dag: bool
    dependents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    leaves: tuple[str, ...] = ()
    handlers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Node:
    path: str
    step: models.StepBase
    scope: Scope
    index: int


class Plan:
    def __init__(self, definition: models.WorkflowDefinition) -> None:
        self.definition = definition
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.in_maps: set[str] = set()  # template paths of steps inside a map's iterator
        self._lock = threading.Lock()  # item scopes are derived lazily; plans are shared
        self._items: weakref.WeakValueDictionary[str, Scope] = weakref.WeakValueDictionary()
        self._recent: collections.OrderedDict[str, Scope] = collections.OrderedDict()
        self.top = self._scope(definition.steps, "", None, None)
        self.rank: dict[str, int] = {}  # template path -> position in the graph's order
        self._rank(definition.steps, "")
        self.top_level_count = len(definition.steps)
        self.top_level = frozenset(step.name for step in definition.steps)

    def _scope(
        self,
        steps: tuple[models.StepBase, ...],
        prefix: str,
        parent: str | None,
        branch: str | None,
    ) -> Scope:
        dag = graph.is_dag_scope(steps)
        dependents: dict[str, list[str]] = {s.name: [] for s in steps}
        for s in steps:
            for dep in s.depends_on:
                dependents.setdefault(dep, []).append(s.name)
        leaves = tuple(s.name for s in steps if not dependents.get(s.name))
        scope = Scope(
            prefix,
            steps,
            parent,
            branch,
            dag,
            {k: tuple(v) for k, v in dependents.items()},
            leaves,
            frozenset(graph.error_targets(steps)),
        )
        self.scopes[prefix] = scope
        for i, step in enumerate(steps):
            path = prefix + step.name
            self.nodes[path] = Node(path, step, scope, i)
            in_map = (
                parent in self.in_maps or isinstance(self.nodes[parent].step, models.MapStep)
                if parent
                else False
            )
            if in_map and "@" not in path:  # templates only: item paths (with @) are real steps
                self.in_maps.add(path)
            for br in models.child_branches(step):
                self._scope(br.steps, f"{path}/{br.name}/", path, br.name)
        return scope

    def _rank(self, steps: tuple[models.StepBase, ...], prefix: str) -> None:
        """Number the steps in the graph's order (``graph.graph_order``), a container's
        branches right after the container."""
        by_name = {s.name: s for s in steps}
        for name in graph.graph_order(steps):
            self.rank[prefix + name] = len(self.rank)
            for br in models.child_branches(by_name[name]):
                self._rank(br.steps, f"{prefix}{name}/{br.name}/")

    def order_key(
        self, path: str, started_at: datetime | None, completed_at: datetime | None
    ) -> OrderKey:
        """Where a step is listed among an instance's steps (``order_key``)."""
        rank = self.rank.get(template_path(path), len(self.rank))
        return order_key(path, started_at, completed_at, rank)

    def item_scope(self, map_path: str, index: int) -> Scope:
        """The scope of item ``index`` of a map: the iterator's steps under ``map/iterator@index/``."""
        step = self.node(map_path).step
        assert isinstance(step, models.MapStep)
        found = self._item_scope(item_prefix(map_path, step, index))
        assert found is not None
        return found

    def _item_scope(self, prefix: str) -> Scope | None:
        """The scope at ``prefix`` (a map item's, or a branch inside one): the same object as
        long as anyone holds it, else derived again from the definition's own scope there."""
        with self._lock:
            found = self._items.get(prefix)
            if found is None:
                found = self._derive(prefix)
                if found is None:
                    return None
                self._items[prefix] = found
            self._recent[prefix] = found
            self._recent.move_to_end(prefix)
            if len(self._recent) > ITEM_SCOPES_KEPT:
                self._recent.popitem(last=False)
        return found

    def _derive(self, prefix: str) -> Scope | None:
        """``m/it@3/`` from ``m/it/``: the same steps under another prefix; None unless every
        ``@i`` in ``prefix`` follows a map step's iterator."""
        parts = prefix.rstrip("/").split("/")
        for i, part in enumerate(parts):
            name, at, index = part.partition("@")
            if not at:
                continue
            owner = self.nodes.get(template_path("/".join(parts[:i]) + "/").rstrip("/"))
            if not (
                index.isdigit()
                and owner is not None
                and isinstance(owner.step, models.MapStep)
                and owner.step.iterator.name == name
            ):
                return None
        template = self.scopes.get(template_path(prefix))
        if template is None:
            return None
        parent, _, branch = prefix[:-1].rpartition("/")
        return dataclasses.replace(template, prefix=prefix, parent=parent, branch=branch)

    def find(self, path: str) -> Node | None:
        """The node at ``path``, a map item's included; None if the definition has no such step."""
        found = self.nodes.get(path)
        if found is None and "@" in path:
            prefix, _, _ = path.rpartition("/")
            template = self.nodes.get(template_path(path))
            scope = self._item_scope(prefix + "/")
            if template is not None and scope is not None:
                found = Node(path, template.step, scope, template.index)
        return found

    def node(self, path: str) -> Node:
        found = self.find(path)
        if found is None:
            raise KeyError(path)
        return found

    def scope(self, prefix: str) -> Scope | None:
        if "@" in prefix:
            return self._item_scope(prefix)
        return self.scopes.get(prefix)

    def roots(self, scope: Scope) -> list[str]:
        return [scope.prefix + name for name in graph.roots(scope.steps)]

    def next_of(self, node: Node) -> str | None:
        nxt = graph.sequential_next(node.scope.steps, node.index, node.scope.handlers)
        return None if nxt is None else node.scope.prefix + nxt

    def sibling(self, node: Node, name: str) -> str:
        return node.scope.prefix + name


_PLANS: dict[int, Plan] = {}


def plan_for(definition: models.WorkflowDefinition) -> Plan:
    """Cached by identity: definitions may hold unhashable values (dict inputs)."""
    found = _PLANS.get(id(definition))
    if found is None or found.definition is not definition:
        if len(_PLANS) > 512:
            _PLANS.clear()
        found = _PLANS[id(definition)] = Plan(definition)
    return found
