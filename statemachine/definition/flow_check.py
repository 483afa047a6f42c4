"""Typed data flow, checked at build: what reaches a step must fit the step's ``input_schema``.

``check`` follows the data the runtime passes (``runtime/flowview``): a step without an ``input``
mapping receives ``prev``, the output of the step that led to it (in a DAG: its last listed
dependency; at a scope's start: the scope's input, the workflow input at the top, a map's item
in an iterator); a choice, a loop's exit and a timer wait pass their ``prev`` on; a parallel
outputs ``{branch: its last step's output}``, a map the list of its items' outputs. A mapping's
object is built from its constants and the shapes its ``${{ }}`` templates read, and every
field path an expression or template reads (``score.risk``, ``steps.x.total``,
``input.order_id``) must be declared by the schema it reads from, and so must the event keys
a trigger's condition reads (the event's data is the instance's input). Only what is proven wrong is
reported (``flow_shapes``); an unknown side (no schema, a callable, a subworkflow's output, an
event's data) is never an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from statemachine import errors
from statemachine.definition import expressions, flow_refs, graph, issues, models
from statemachine.definition import flow_messages as say
from statemachine.definition import flow_shapes as shapes
from statemachine.definition.flow_messages import Source

Loc = issues.Loc
# rules under which a step waits for every dependency, so ``prev`` is the last one listed
_WAIT_ALL = {"all_success", "none_failed", "none_failed_min_one_success", "none_skipped"}
_PASSES_ON = (models.ChoiceStep, models.LoopStep)
_MAX_CHAIN = 100  # steps passing data on, followed back in one go (Python's stack is finite)


@dataclass(eq=False)
class _Scope:
    steps: tuple[models.StepBase, ...]
    loc: Loc
    start: list[Source]  # what its first steps receive
    visible: dict[str, tuple[_Scope, models.StepBase]]
    item: list[Source] = field(default_factory=list)  # ``item`` inside a map's iterator
    preds: dict[str, list[str]] = field(default_factory=dict)
    first: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # steps whose input cannot be known
    last_dependency: set[str] = field(default_factory=set)  # DAG steps fed by their last one


def check(definition: models.WorkflowDefinition) -> list[errors.Issue]:
    """Every proven mismatch of ``definition``'s data flow; empty when it declares no schema."""
    if not _has_schema(definition):
        return []
    return list(_Flow(definition).run())


def _has_schema(definition: models.WorkflowDefinition) -> bool:
    if definition.input_schema is not None:
        return True
    return any(
        isinstance(s, models.TaskStep) and (s.input_schema or s.output_schema)
        for _, s in definition.walk()
    )


class _Flow:
    def __init__(self, definition: models.WorkflowDefinition) -> None:
        shape = shapes.of_schema(definition.input_schema, output=True)
        self.input = [Source("the workflow input", shape, "its inputSchema")]
        self.outs: dict[tuple[int, str], list[Source]] = {}
        self.ins: dict[tuple[int, str], list[Source]] = {}
        self.busy: set[tuple[str, int, str]] = set()
        self.children: dict[tuple[int, str], _Scope] = {}
        self.top = self.scope(definition.steps, ("steps",), self.input, {}, [])
        self.triggers = definition.triggers
        self.event = [Source("the event data", shape, "the workflow's inputSchema")]

    def scope(
        self,
        steps: tuple[models.StepBase, ...],
        loc: Loc,
        start: list[Source],
        outer: dict[str, tuple[_Scope, models.StepBase]],
        item: list[Source],
    ) -> _Scope:
        sc = _Scope(steps, loc, start, dict(outer), item)
        sc.visible.update((s.name, (sc, s)) for s in steps)
        handlers = graph.error_targets(steps)
        sc.unknown = set(handlers)
        if graph.is_dag_scope(steps):
            for s in steps:
                if not s.depends_on:
                    sc.first.add(s.name)
                elif s.trigger in _WAIT_ALL:
                    sc.preds[s.name] = [s.depends_on[-1]]
                    sc.last_dependency.add(s.name)
                else:  # it may run early, with whichever dependency finished
                    sc.unknown.add(s.name)
        else:
            sc.first = {steps[0].name} if steps else set()
            # a loop going round passes on what led to it, like its exit (timers.jump)
            for src, dst, label in graph.edges(steps):
                if label != graph.ERROR_LABEL:
                    sc.preds.setdefault(dst, []).append(src)
        return sc

    # --- what a step receives and passes on -------------------------------------------------

    def received(self, sc: _Scope, step: models.StepBase) -> list[Source]:
        """What flows into ``step`` as ``prev``; an unknown part is a Source without a shape."""
        key = (id(sc), step.name)
        if key in self.ins:
            return self.ins[key]
        guard = ("in", id(sc), step.name)
        if step.name in sc.unknown or guard in self.busy or len(self.busy) > _MAX_CHAIN:
            return [Source(f"{step.name!r}'s input", None, "")]
        self.busy.add(guard)
        try:
            self.ins[key] = _unique(self._received(sc, step))
        finally:
            self.busy.discard(guard)
        return self.ins[key]

    def _received(self, sc: _Scope, step: models.StepBase) -> list[Source]:
        found = list(sc.start) if step.name in sc.first else []
        for pred in sc.preds.get(step.name, ()):
            other = sc.visible.get(pred)
            if other is None or other[0] is not sc:
                continue
            found.extend(self.output(sc, other[1]))
            if other[1].condition is not None and step.name not in sc.last_dependency:
                found.extend(self.received(sc, other[1]))  # skipped, it passes its input on
        if step.name in sc.last_dependency:  # say why that one
            found = [Source(f"{s.who} (its last listed dependency)", s.shape, s.has) for s in found]
        return found

    def output(self, sc: _Scope, step: models.StepBase) -> list[Source]:
        """What ``step`` passes on when it succeeds."""
        key = (id(sc), step.name)
        if key in self.outs:
            return self.outs[key]
        guard = ("out", id(sc), step.name)
        if guard in self.busy or len(self.busy) > _MAX_CHAIN:
            # a cycle of steps that pass their input on, or a chain too long to follow: unknown
            return [Source(repr(step.name), None, "")]
        self.busy.add(guard)
        try:
            self.outs[key] = self._output(sc, step)
        finally:
            self.busy.discard(guard)
        return self.outs[key]

    def _output(self, sc: _Scope, step: models.StepBase) -> list[Source]:
        mine = repr(step.name)
        if isinstance(step, models.BrokenStep):
            return [Source(mine, None, "")]
        if isinstance(step, models.TaskStep):
            return [
                Source(mine, shapes.of_schema(step.output_schema, output=True), "its output schema")
            ]
        if isinstance(step, _PASSES_ON) or (
            isinstance(step, models.WaitStep) and step.event is None
        ):
            return self.received(sc, step)
        if isinstance(step, models.PassStep):
            return self._pass_output(sc, step)
        if isinstance(step, models.ParallelStep) and step.mode == "all":
            props = {b.name: self._one(self.branch_output(sc, step, b)) for b in step.branches}
            node = {"type": "object", "properties": props, "required": list(props)}
            return [Source(mine, shapes.Shape(node, {}), "its output")]
        if isinstance(step, models.MapStep):
            inner = self._one(self.branch_output(sc, step, step.iterator))
            return [Source(mine, shapes.Shape({"type": "array", "items": inner}, {}), "its output")]
        return [Source(mine, None, "")]

    def _pass_output(self, sc: _Scope, step: models.PassStep) -> list[Source]:
        mine = repr(step.name)
        if isinstance(step.transform, str):
            whole = _whole_path(step.transform)
            node = self._one(self.path_shape(sc, step, whole)) if whole else {}
            return [Source(mine, shapes.Shape(node, {}) if node else None, "its transform")]
        if step.transform is not None:
            return [Source(mine, None, "")]
        if step.result is not None:
            return [
                Source(
                    mine, shapes.Shape(self.value_shape(sc, step, step.result), {}), "its result"
                )
            ]
        return self.received(sc, step)

    def branch_output(self, sc: _Scope, step: models.StepBase, br: models.Branch) -> list[Source]:
        """A sequential branch's output: its one last step's (a DAG's: not decided)."""
        inner = self.child(sc, step, br)
        steps = inner.steps
        if not steps or graph.is_dag_scope(steps):
            return []
        handlers = graph.error_targets(steps)
        ends = [
            s
            for i, s in enumerate(steps)
            if not isinstance(s, models.ChoiceStep)
            and graph.sequential_next(steps, i, handlers) is None
        ]
        return self.output(inner, ends[0]) if len(ends) == 1 else []

    def child(self, sc: _Scope, step: models.StepBase, br: models.Branch) -> _Scope:
        key = (id(sc), f"{step.name}/{br.name}")
        cached = self.children.get(key)
        if cached is not None:
            return cached
        index = sc.steps.index(step)
        if isinstance(step, models.MapStep):
            loc: Loc = (*sc.loc, index, "iterator", "steps")
            item = self.items_of(sc, step)
            made = self.scope(br.steps, loc, item, sc.visible, item)
        else:
            j = models.child_branches(step).index(br)
            loc = (*sc.loc, index, "branches", j, "steps")
            made = self.scope(br.steps, loc, self.received(sc, step), sc.visible, sc.item)
        self.children[key] = made
        return made

    def items_of(self, sc: _Scope, step: models.MapStep) -> list[Source]:
        who = f"an item of {step.name!r}"
        if not isinstance(step.items, str):
            return [Source(who, None, "")]
        whole = _whole_path(step.items)
        if whole is None:
            return [Source(who, None, "")]
        array = self._one(self.path_shape(sc, step, whole))
        items = shapes.items_of(shapes.Shape(array, {}))
        return [Source(who, items, "its schema")]

    # --- reading names and paths ------------------------------------------------------------

    def name_sources(
        self, sc: _Scope, step: models.StepBase, path: flow_refs.Path
    ) -> tuple[list[Source], tuple[flow_refs.Key, ...]]:
        """What the root of ``path`` names at ``step``, and the keys read below it."""
        name, keys = path.name, path.keys
        if name == "input":
            return self.input, keys
        if name == "prev":
            return self.received(sc, step), keys
        if name == "item":
            return sc.item, keys
        if name == "steps" and keys and isinstance(keys[0], str):
            name, keys = keys[0], keys[1:]
        elif name in {"steps", "metadata", "event", "index"}:
            return [], keys
        found = sc.visible.get(name)
        if found is None:
            return [], keys
        return self.output(*found), keys

    def path_shape(self, sc: _Scope, step: models.StepBase, path: flow_refs.Path) -> list[Source]:
        """The shapes the value of ``path`` may have (one per known source)."""
        sources, keys = self.name_sources(sc, step, path)
        out: list[Source] = []
        for src in sources:
            shape = src.shape
            for key in keys:
                if shape is None:
                    break
                shape, _ = shapes.member(shape, key)
            out.append(Source(src.who, shape, src.has))
        return out

    @staticmethod
    def _one(sources: list[Source]) -> dict[str, Any]:
        """One inlined node when every source agrees on a known shape, else "any value"."""
        if len(sources) != 1 or sources[0].shape is None:
            return {}
        return shapes.inline(sources[0].shape)

    def value_shape(self, sc: _Scope, step: models.StepBase, value: Any) -> dict[str, Any]:
        """The shape of a mapping or result value once its templates are rendered."""
        if isinstance(value, str):
            if not expressions.is_template(value):
                return dict(shapes.literal(value).node)
            whole = say.whole_template(value)
            if whole is None:
                return {"type": "string"}
            paths = [p for p in flow_refs.paths(whole.tree) if p.whole]
            return self._one(self.path_shape(sc, step, paths[0])) if paths else {}
        if isinstance(value, dict):
            props = {str(k): self.value_shape(sc, step, v) for k, v in value.items()}
            return {"type": "object", "properties": props, "required": list(props)}
        if isinstance(value, list | tuple):
            return {"type": "array"}
        return dict(shapes.literal(value).node)

    # --- the checks -------------------------------------------------------------------------

    def run(self) -> Iterator[errors.Issue]:
        yield from self.trigger_reads()
        yield from self.walk(self.top)

    def trigger_reads(self) -> Iterator[errors.Issue]:
        """A trigger's condition reads the event's data, which becomes the instance's input (and
        must fit its inputSchema): a bare name is a top-level key, ``event.x``/``input.x`` too.
        A key the schema proves absent makes the condition fail to evaluate: it never matches."""
        for i, trigger in enumerate(self.triggers):
            if trigger.condition is None:
                continue
            try:
                tree = expressions.compile_expression(trigger.condition).tree
            except errors.ExpressionError:
                continue  # validation reports it
            for path in flow_refs.paths(tree):
                keys = path.keys if path.name in {"event", "input"} else (path.name, *path.keys)
                where = ("triggers", i, "condition")
                yield from self.missing(self.event, keys, trigger.condition, where)

    def walk(self, sc: _Scope) -> Iterator[errors.Issue]:
        for i, step in enumerate(sc.steps):
            loc = (*sc.loc, i)
            yield from self.reads(sc, step, loc)
            if isinstance(step, models.TaskStep) and step.input_schema is not None:
                need = shapes.of_schema(step.input_schema, output=False)
                if need is not None:
                    yield from self.inflow(sc, step, need, loc)
            for br in models.child_branches(step):
                yield from self.walk(self.child(sc, step, br))

    def inflow(
        self, sc: _Scope, step: models.TaskStep, need: shapes.Shape, loc: Loc
    ) -> Iterator[errors.Issue]:
        if step.input is None:
            for src in self.received(sc, step):
                if src.shape is not None:
                    for gap in shapes.gaps(src.shape, need):
                        yield say.edge(step.name, src, gap, (*loc, "inputSchema"))
        elif not callable(step.input):
            have = shapes.Shape(self.value_shape(sc, step, step.input), {})
            for gap in shapes.gaps(have, need):
                yield say.mapping(step.name, step.input, gap, (*loc, "input"))

    def reads(self, sc: _Scope, step: models.StepBase, loc: Loc) -> Iterator[errors.Issue]:
        """Every field path an expression or template of ``step`` reads, against its schema."""
        for where, source, tree in say.expressions_of(step, loc):
            for path in flow_refs.paths(tree):
                yield from self.fields_read(sc, step, path, source, where)

    def fields_read(
        self, sc: _Scope, step: models.StepBase, path: flow_refs.Path, source: str, where: Loc
    ) -> Iterator[errors.Issue]:
        sources, keys = self.name_sources(sc, step, path)
        yield from self.missing(sources, keys, source, where)

    @staticmethod
    def missing(
        sources: list[Source], keys: tuple[flow_refs.Key, ...], source: str, where: Loc
    ) -> Iterator[errors.Issue]:
        """The first key of ``keys`` each source's schema proves absent, if any."""
        for src in sources:
            shape = src.shape
            for depth, key in enumerate(keys):
                if shape is None:
                    break
                sub, absent = shapes.member(shape, key)
                if absent:
                    yield say.unknown_field(src, keys[:depth], key, shape, source, where)
                    break
                shape = sub


def _whole_path(source: str) -> flow_refs.Path | None:
    """The path an expression is, when it is nothing more (``input.lines``); its compile error,
    if any, is validation's to report."""
    try:
        tree = expressions.compile_expression(source).tree
    except errors.ExpressionError:
        return None
    return next((p for p in flow_refs.paths(tree) if p.whole), None)


def _unique(sources: list[Source]) -> list[Source]:
    seen: set[str] = set()
    out: list[Source] = []
    for src in sources:
        if src.who not in seen:
            seen.add(src.who)
            out.append(src)
    return out
