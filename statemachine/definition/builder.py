"""The fluent builder: ``workflow(...).task(...).choice(...).build()``.

Steps are collected as plain keyword dicts and turned into models at ``build()``, so every
mistake in the chain is reported together, in one ``DefinitionError``, like YAML's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Self

from pydantic import ValidationError

from statemachine import errors
from statemachine.definition import issues, models, validation

_KINDS: dict[str, type[models.StepBase]] = {
    "task": models.TaskStep,
    "choice": models.ChoiceStep,
    "parallel": models.ParallelStep,
    "pass": models.PassStep,
    "poll": models.PollStep,
    "loop": models.LoopStep,
    "wait": models.WaitStep,
    "map": models.MapStep,
    "subworkflow": models.SubworkflowStep,
}


def when(condition: models.ExprOrFn, *, next: str) -> models.ChoiceRule:
    """One rule of a choice step: go to ``next`` when ``condition`` (callable or expression) holds."""
    return models.ChoiceRule(condition=condition, next=next)


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# what a broken step keeps for the checks of the whole graph: its name, edges and expressions
_GRAPH_FIELDS = (
    "name",
    "next",
    "end",
    "on_error",
    "error_next",
    "depends_on",
    "condition",
    "input",
)


def broken_step(fields: Mapping[str, Any]) -> models.BrokenStep | None:
    """The part of a step that failed validation that the graph checks can still use."""
    kept = {k: fields[k] for k in _GRAPH_FIELDS if k in fields}
    for _ in range(len(_GRAPH_FIELDS)):
        try:
            return models.BrokenStep(**kept)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if "name" in bad or not bad & kept.keys():
                return None
            kept = {k: v for k, v in kept.items() if k not in bad}
    return None


def build_steps(
    raw: Sequence[tuple[str, dict[str, Any]]],
    base: issues.Loc,
    indices: Sequence[int] | None = None,
) -> tuple[list[models.StepBase], list[errors.Issue]]:
    """Models of ``raw``'s steps with every field issue; a broken step is a ``BrokenStep``.
    ``indices``: where each sits in the list the author wrote (default: 0, 1, 2...)."""
    steps: list[models.StepBase] = []
    found: list[errors.Issue] = []
    for n, (kind, fields) in enumerate(raw):
        i = n if indices is None else indices[n]
        if fields.get("error_next") and fields.get("on_error", "fail") == "fail":
            fields = {**fields, "on_error": "branch"}
        if kind == "broken":  # unreadable beyond its graph keys, already reported
            stand_in = broken_step(fields)
            if stand_in is not None:
                steps.append(stand_in)
            continue
        try:
            steps.append(_KINDS[kind](**fields))
        except ValidationError as exc:
            found.extend(issues.from_validation_error(exc, (*base, i)))
            stand_in = broken_step(fields)
            if stand_in is not None:
                steps.append(stand_in)
    return steps, found


def definition_or_none(
    fields: Mapping[str, Any], found: list[errors.Issue]
) -> models.WorkflowDefinition | None:
    """The definition, adding its top-level issues to ``found``; when a field is bad, the
    definition without it, so the graph checks still run in the same pass."""
    kept = dict(fields)
    for _ in range(len(kept) + 1):
        try:
            return models.WorkflowDefinition(**kept)
        except ValidationError as exc:
            issued = {i.location for i in found}
            found.extend(
                i
                for i in issues.from_validation_error(exc)
                if not i.location.startswith("steps[") and i.location not in issued
            )
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} - {"steps"}
            if not bad & kept.keys() or bad & {"name", "steps"}:
                return None
            kept = {k: v for k, v in kept.items() if k not in bad}
    return None


class _Steps:
    """Step methods shared by ``workflow()`` and ``branch()``."""

    def __init__(self) -> None:
        self._raw: list[tuple[str, dict[str, Any]]] = []

    def _add(self, kind: str, name: str, common: dict[str, Any], own: dict[str, Any]) -> Self:
        self._raw.append((kind, _compact({"name": name, **own, **common})))
        return self

    def task(
        self,
        name: str,
        handler: models.ExprOrFn,
        *,
        input: Any = None,
        input_schema: models.Schema | None = None,
        output_schema: models.Schema | None = None,
        retry: models.RetryPolicy | Mapping[str, Any] | None = None,
        timeout: Any = None,
        compensate: models.ExprOrFn | None = None,
        **common: Any,
    ) -> Self:
        own = {
            "handler": handler,
            "input": input,
            "input_schema": input_schema,
            "output_schema": output_schema,
            "retry": retry,
            "timeout": timeout,
            "compensate": compensate,
        }
        return self._add("task", name, common, own)

    def choice(
        self,
        name: str,
        *,
        choices: Sequence[models.ChoiceRule | Mapping[str, Any]],
        default: str | None = None,
        **common: Any,
    ) -> Self:
        return self._add("choice", name, common, {"choices": tuple(choices), "default": default})

    def parallel(
        self,
        name: str,
        *,
        branches: Sequence[models.Branch],
        mode: Literal["all", "race"] = "all",
        failure: Literal["fail-fast", "wait-all"] = "fail-fast",
        max_concurrency: int | None = None,
        **common: Any,
    ) -> Self:
        own = {
            "branches": tuple(branches),
            "mode": mode,
            "failure": failure,
            "max_concurrency": max_concurrency,
        }
        return self._add("parallel", name, common, own)

    def pass_(
        self,
        name: str,
        *,
        result: Any = None,
        transform: models.ExprOrFn | None = None,
        **common: Any,
    ) -> Self:
        return self._add("pass", name, common, {"result": result, "transform": transform})

    def end(self, name: str) -> Self:
        return self.pass_(name, end=True)

    def poll(
        self,
        name: str,
        *,
        check: models.ExprOrFn,
        interval: Any,
        timeout: Any = None,
        max_attempts: int | None = None,
        input: Any = None,
        **common: Any,
    ) -> Self:
        own = {
            "check": check,
            "interval": interval,
            "timeout": timeout,
            "max_attempts": max_attempts,
            "input": input,
        }
        return self._add("poll", name, common, own)

    def loop(
        self,
        name: str,
        *,
        condition: models.ExprOrFn,
        target: str,
        interval: Any = None,
        max_iterations: int | None = None,
        timeout: Any = None,
        **common: Any,
    ) -> Self:
        own = {
            "condition": condition,
            "target": target,
            "interval": interval,
            "max_iterations": max_iterations,
            "timeout": timeout,
        }
        return self._add("loop", name, common, own)

    def wait(
        self,
        name: str,
        *,
        duration: Any = None,
        until: Any = None,
        event: str | None = None,
        timeout: Any = None,
        **common: Any,
    ) -> Self:
        own = {"duration": duration, "until": until, "event": event, "timeout": timeout}
        return self._add("wait", name, common, own)

    def map(
        self,
        name: str,
        *,
        items: models.ExprOrFn,
        iterator: models.Branch,
        max_concurrency: int | None = None,
        **common: Any,
    ) -> Self:
        own = {"items": items, "iterator": iterator, "max_concurrency": max_concurrency}
        return self._add("map", name, common, own)

    def subworkflow(self, name: str, *, workflow: str, input: Any = None, **common: Any) -> Self:
        return self._add("subworkflow", name, common, {"workflow": workflow, "input": input})


class BranchBuilder(_Steps):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def build(self) -> models.Branch:
        steps, found = build_steps(self._raw, ("branches", self._name, "steps"))
        if found:
            raise errors.DefinitionError(found)
        try:
            return models.Branch(name=self._name, steps=tuple(steps))
        except ValidationError as exc:
            raise errors.DefinitionError(
                issues.from_validation_error(exc, ("branches", self._name))
            ) from None


class WorkflowBuilder(_Steps):
    def __init__(
        self,
        name: str,
        version: str | int = "1",
        input_schema: models.Schema | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__()
        self._fields: dict[str, Any] = _compact(
            {
                "name": name,
                "version": version,
                "input_schema": input_schema,
                "title": title,
                "description": description,
            }
        )
        self._triggers: list[models.Trigger] = []
        self._schedules: list[models.Schedule] = []

    def timeout(self, duration: Any) -> Self:
        self._fields["timeout"] = duration
        return self

    def default_retry(self, **policy: Any) -> Self:
        self._fields["default_retry"] = policy
        return self

    def concurrency(self, limit: int, key: str | None = None) -> Self:
        """At most ``limit`` running instances per value of ``key`` (``${{ input.x }}``), or of
        the workflow without a key; the rest wait as ``pending``. Checked in ``build``."""
        self._fields["concurrency"] = {"limit": limit, "key": key}
        return self

    def priority(self, n: int) -> Self:
        """The default priority of its instances: higher ones are claimed first."""
        self._fields["priority"] = n
        return self

    def on_complete(self, callback: Callable[..., Any]) -> Self:
        self._fields["on_complete"] = callback
        return self

    def trigger(self, event: str, condition: str | None = None) -> Self:
        try:
            self._triggers.append(models.Trigger(event=event, condition=condition))
        except ValidationError as exc:
            where = ("triggers", len(self._triggers))
            raise errors.DefinitionError(issues.from_validation_error(exc, where)) from None
        return self

    def schedule(
        self,
        cron: str | None = None,
        *,
        every: Any = None,
        timezone: str = "UTC",
        input: Any = None,
        overlap: models.Overlap = "skip",
        catchup: models.Catchup = "none",
    ) -> Self:
        """Start an instance on every tick of ``cron`` (or ``every`` interval); repeatable."""
        fields = _compact({"cron": cron, "every": every, "input": input})
        try:
            self._schedules.append(
                models.Schedule(**fields, timezone=timezone, overlap=overlap, catchup=catchup)
            )
        except ValidationError as exc:
            where = ("schedules", len(self._schedules))
            raise errors.DefinitionError(issues.from_validation_error(exc, where)) from None
        return self

    def build(self) -> models.WorkflowDefinition:
        steps, found = build_steps(self._raw, ("steps",))
        fields = {**self._fields, "triggers": tuple(self._triggers), "steps": tuple(steps)}
        if self._schedules:
            fields["schedules"] = tuple(self._schedules)
        definition = definition_or_none(fields, found)
        if definition is not None:
            found.extend(validation.validate(definition))
        if found or definition is None:
            raise errors.DefinitionError(found)
        return definition


def workflow(
    name: str,
    version: str | int = "1",
    input_schema: models.Schema | None = None,
    *,
    title: str | None = None,
    description: str | None = None,
) -> WorkflowBuilder:
    return WorkflowBuilder(name, version, input_schema, title=title, description=description)


def branch(name: str) -> BranchBuilder:
    return BranchBuilder(name)
