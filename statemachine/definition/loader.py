"""YAML documents -> ``WorkflowDefinition``: key normalisation, step typing, positions of issues.

Both key styles (camelCase, snake_case) map to one canonical key; every canonical location is
remembered with the source location it came from, so any issue, from pydantic, from
validation or from here, is reported at the author's own line and column.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from statemachine import errors
from statemachine.definition import builder, durations, issues, models, validation, yaml_source

Loc = issues.Loc

_ALIASES = {
    "name": "id",
    "depends_on": "dependsOn",
    "error_branch": "errorBranch",
    "error_next": "errorBranch",
    "on_error": "onError",
    "max_retries": "maxRetries",
    "retry_delay": "retryDelay",
    "default_retry": "defaultRetry",
    "max_attempts": "maxAttempts",
    "backoff_rate": "backoffRate",
    "max_interval": "maxInterval",
    "max_iterations": "maxIterations",
    "max_concurrency": "maxConcurrency",
    "input_schema": "inputSchema",
    "output_schema": "outputSchema",
    "on_complete": "onComplete",
    "params": "input",
    "delay": "wait",
    "retry_on": "retryOn",
}

_TOP_KEYS = {
    "id",
    "version",
    "title",
    "description",
    "timeout",
    "defaultRetry",
    "triggers",
    "steps",
    "onComplete",
    "inputSchema",
}
_COMMON = {
    "id",
    "title",
    "type",
    "description",
    "next",
    "end",
    "onError",
    "errorBranch",
    "dependsOn",
    "condition",
    "trigger",
    "wait",
}
_OWN: dict[str, set[str]] = {
    "task": {
        "action",
        "handler",
        "input",
        "inputSchema",
        "outputSchema",
        "retry",
        "maxRetries",
        "retryDelay",
        "timeout",
        "compensate",
    },
    "choice": {"choices", "default"},
    "parallel": {"branches", "mode", "failure", "maxConcurrency"},
    "pass": {"result", "transform"},
    "poll": {"action", "check", "input", "interval", "timeout", "maxAttempts"},
    "loop": {"target", "interval", "maxIterations", "timeout"},
    "wait": {"duration", "until", "event", "timeout"},
    "map": {"items", "iterator", "maxConcurrency"},
    "subworkflow": {"workflow", "input"},
}
_ON_ERROR = ("fail", "continue", "branch", "retry", "fail-fast", "wait-all")
_RETRY_KEYS = {"maxAttempts", "interval", "backoffRate", "maxInterval", "retryOn"}
_TEMPLATE = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.S)
_FIELD = {  # canonical YAML key -> model field
    "id": "name",
    "dependsOn": "depends_on",
    "errorBranch": "error_next",
    "onError": "on_error",
    "wait": "delay",
    "action": "handler",
    "inputSchema": "input_schema",
    "outputSchema": "output_schema",
    "maxAttempts": "max_attempts",
    "maxIterations": "max_iterations",
    "maxConcurrency": "max_concurrency",
}


_ALLOWED = {kind: _COMMON | own for kind, own in _OWN.items()}


def canonical_key(key: str) -> str:
    return _ALIASES.get(key, key)


@functools.lru_cache(maxsize=256)
def _model_field(key: str) -> str:
    """Canonical YAML key -> model field: ``maxAttempts`` -> ``max_attempts``."""
    return _FIELD.get(key) or re.sub(r"([A-Z])", r"_\1", key).lower()


class _Reader:
    """Walks one document; collects issues instead of raising, so every problem is reported."""

    def __init__(self, doc: yaml_source.SourceDocument) -> None:
        self.doc = doc
        self.found: list[errors.Issue] = []
        self.notes: list[tuple[Loc, Loc]] = []  # (canonical location, source location)

    # -- positions -----------------------------------------------------------------------
    def note(self, canon: Loc, source: Loc) -> None:
        self.notes.append((canon, source))

    def written(self, canon: Loc, fallback: Loc) -> Loc:
        """Where ``canon`` was noted last (its key as written), else ``fallback``."""
        for noted, source in reversed(self.notes):
            if noted == canon:
                return source
        return fallback

    @functools.cached_property
    def where(self) -> dict[str, Loc]:
        """Canonical location text -> source location; only needed once there are issues."""
        return {issues.format_loc(canon): source for canon, source in self.notes}

    def issue(self, message: str, canon: Loc, *, code: str = "invalid") -> None:
        self.found.append(
            errors.Issue(message=message, location=issues.format_loc(canon), code=code)
        )

    def place(self, issue: errors.Issue) -> errors.Issue:
        """Give an issue the line and column of the source node its location came from."""
        parts = issues.parse_loc(issue.location)
        source: Loc | None = None
        for cut in range(len(parts), 0, -1):
            known = self.where.get(issues.format_loc(parts[:cut]))
            if known is not None:
                source = (*known, *parts[cut:])
                break
        line, col = 0, 0
        location = issue.location
        if source is not None:
            location = issues.format_loc(source)  # the keys as the author wrote them
            at_key = issue.code in {"extra_forbidden", "unknown_key", "duplicate_key"}
            line, col = self.doc.key_position(source) if at_key else self.doc.position(source)
        if not line:
            line, col = 1, 1
        return errors.Issue(issue.message, location, self.doc.path, line, col, issue.code)

    # -- helpers -------------------------------------------------------------------------
    def mapping(self, value: Any, canon: Loc, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.issue(f"{what} must be a mapping, got {type(value).__name__}", canon, code="type")
        return None

    def normalise(
        self, raw: Mapping[str, Any], canon: Loc, source: Loc, allowed: set[str], what: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        written: dict[str, str] = {}  # canonical key -> the key as the author wrote it
        titled = "title" in allowed and "id" in raw and "name" in raw
        for key, value in raw.items():
            ckey = canonical_key(str(key))
            if titled and key == "name":  # workflow.do's shape: `id` names it, `name` titles it
                ckey = "title"
            self.note((*canon, ckey), (*source, key))
            if ckey not in allowed:
                hint = issues.did_you_mean(ckey, sorted(allowed))
                self.issue(
                    f"unknown key {key!r} on {what}{hint}", (*canon, ckey), code="unknown_key"
                )
                continue
            if ckey in out:
                self.issue(
                    f"keys {written[ckey]!r} and {key!r} both give {ckey!r}; keep one",
                    (*canon, ckey),
                    code="duplicate_key",
                )
            written.setdefault(ckey, str(key))
            out[ckey] = value
        return out

    def json_schema(self, value: Any, canon: Loc) -> bool:
        """A schema in YAML is a JSON Schema: a mapping (its soundness is the model's check)."""
        if isinstance(value, dict):
            return True
        self.issue(
            f"{canon[-1]} must be a JSON Schema (a mapping), got {type(value).__name__}",
            canon,
            code="type",
        )
        return False

    def not_loadable(self, value: Any, canon: Loc) -> bool:
        if isinstance(value, dict) and value.get("loadable") is False and "callable" in value:
            self.issue(
                f"{value.get('callable')!r} is an inline Python callable and cannot be loaded from YAML; "
                "register it as an action and name it instead",
                canon,
                code="not_loadable",
            )
            return True
        return False

    def expression(self, value: Any) -> Any:
        """Conditions may be written bare or wrapped in ``${{ }}``; the model keeps them bare."""
        if isinstance(value, str):
            match = _TEMPLATE.match(value)
            if match and "${{" not in match.group(1):
                return match.group(1).strip()
        return value

    # -- document ------------------------------------------------------------------------
    def definition(self) -> models.WorkflowDefinition | None:
        raw = self.mapping(self.doc.data, (), "a workflow definition")
        if raw is None:
            return None
        top = self.normalise(raw, (), (), _TOP_KEYS, "the workflow")
        fields: dict[str, Any] = {}
        if "id" not in top:
            self.issue("the workflow needs an id (or name)", (), code="missing")
        for key in ("id", "version", "title", "description", "timeout"):
            if key in top:
                fields[_FIELD.get(key, key)] = top[key]
        if "onComplete" in top and not self.not_loadable(top["onComplete"], ("onComplete",)):
            self.issue("onComplete cannot be given in YAML", ("onComplete",), code="not_loadable")
        schema = top.get("inputSchema")
        if schema is not None and not self.not_loadable(schema, ("inputSchema",)):
            fields["input_schema"] = schema if self.json_schema(schema, ("inputSchema",)) else None
        if "defaultRetry" in top:
            policy = self.retry(top["defaultRetry"], ("defaultRetry",))
            if policy is not None:
                fields["default_retry"] = policy
        fields["triggers"] = self.triggers(top.get("triggers", []))
        steps_raw = top.get("steps")
        if not isinstance(steps_raw, list):
            self.issue("steps must be a list of steps", ("steps",), code="type")
            steps_raw = []
        steps = self.steps(steps_raw, ("steps",), ("steps",))
        fields.update(steps=tuple(steps), source_path=self.doc.path)
        fields.setdefault("name", "unnamed")  # reported above; the steps are still checked
        return builder.definition_or_none(fields, self.found)

    def triggers(self, value: Any) -> tuple[models.Trigger, ...]:
        if not isinstance(value, list):
            self.issue("triggers must be a list", ("triggers",), code="type")
            return ()
        out: list[models.Trigger] = []
        for i, item in enumerate(value):
            canon = ("triggers", i)
            self.note(canon, canon)
            if isinstance(item, str):
                item = {"event": item}
            raw = self.mapping(item, canon, "a trigger")
            if raw is None:
                continue
            fields = self.normalise(raw, canon, canon, {"event", "condition"}, "a trigger")
            fields["condition"] = self.expression(fields.get("condition"))
            try:
                out.append(models.Trigger(**fields))
            except ValidationError as exc:
                self.found.extend(issues.from_validation_error(exc, canon))
        return tuple(out)

    def retry(self, value: Any, canon: Loc) -> dict[str, Any] | None:
        raw = self.mapping(value, canon, "a retry policy")
        if raw is None:
            return None
        fields = self.normalise(raw, canon, canon, _RETRY_KEYS, "a retry policy")
        if "retryOn" in fields:
            self.issue(
                "retryOn names Python exception types and cannot be given in YAML",
                (*canon, "retryOn"),
                code="not_loadable",
            )
        return {_model_field(k): v for k, v in fields.items() if k != "retryOn"}

    def steps(self, raw_steps: list[Any], canon: Loc, source: Loc) -> list[models.StepBase]:
        collected: list[tuple[str, dict[str, Any]]] = []
        indices: list[int] = []
        for i, raw in enumerate(raw_steps):
            c, s = (*canon, i), (*source, i)
            self.note(c, s)
            step = self.mapping(raw, c, "a step")
            if step is None:
                continue
            parsed = self.step(step, c, s)
            if parsed is None:  # no usable type: its name and references still join the graph
                parsed = ("broken", self.graph_fields(step))
            collected.append(parsed)
            indices.append(i)
        built, found = builder.build_steps(collected, canon, indices)
        self.found.extend(found)
        return built

    @staticmethod
    def graph_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
        """A step's graph keys, for a stand-in when the step itself cannot be read."""
        fields: dict[str, Any] = {}
        for key, value in raw.items():
            ckey = canonical_key(str(key))
            if ckey in {"id", "next", "end", "dependsOn", "errorBranch", "onError", "condition"}:
                fields.setdefault(_model_field(ckey), value)
        return fields

    def step(
        self, raw: dict[str, Any], canon: Loc, source: Loc
    ) -> tuple[str, dict[str, Any]] | None:
        kind = raw.get("type")
        if kind is None:
            kind = "task" if ("action" in raw or "handler" in raw) else None
        if kind not in _OWN:
            got = "no type and no action" if kind is None else f"unknown type {kind!r}"
            hint = issues.did_you_mean(str(kind), _OWN) if kind is not None else ""
            if kind is None:  # a misspelt `action:` is the usual cause: name it
                typo = next((str(k) for k in raw if issues.did_you_mean(str(k), ["action"])), None)
                hint = f" (did you mean 'action' instead of {typo!r}?)" if typo else ""
            self.note((*canon, "type"), (*source, "type"))
            self.issue(
                f"step has {got}{hint}; type is one of {', '.join(models.STEP_TYPES)}",
                (*canon, "type") if kind is not None else canon,
                code="step_type",
            )
            return None
        fields = self.normalise(raw, canon, source, _ALLOWED[kind], f"a {kind} step")
        fields.pop("type", None)
        out: dict[str, Any] = {}
        for key, value in fields.items():
            here = (*canon, key)
            if self.not_loadable(value, here):
                continue
            if key in {"maxRetries", "retryDelay", "retry"}:
                continue
            if key == "onError" and value not in _ON_ERROR:
                hint = issues.did_you_mean(str(value), _ON_ERROR)
                msg = f"{value!r} is not one of {', '.join(_ON_ERROR)}{hint}"
                self.issue(msg, here, code="on_error")
                continue
            if key == "onError" and value in {"fail-fast", "wait-all"}:
                if kind == "parallel":
                    out["failure"] = value
                else:
                    self.issue(
                        f"onError: {value} is only for parallel steps", here, code="on_error"
                    )
                continue
            if key == "onError" and value == "retry":
                out.setdefault("retry", {})
                continue
            if key in {"condition", "transform", "items"} or (
                key == "until" and isinstance(value, str)
            ):
                value = self._until(value) if key == "until" else self.expression(value)
            if key == "choices":
                value = self.choices(value, here)
            if key == "branches":
                value = self.branches(value, here, (*source, key))
            if key == "iterator":
                value = self.branch(value, here, (*source, key), default_name="item")
            if key == "handler":
                self.issue(
                    "handler cannot be given in YAML; name a registered action with action:",
                    here,
                    code="not_loadable",
                )
                continue
            if key == "action" and kind == "poll":
                key = "check"
            if key in {"inputSchema", "outputSchema"} and not self.json_schema(value, here):
                continue
            if key == "compensate" and not isinstance(value, str):
                self.issue("compensate must name a registered action", here, code="type")
                continue
            out[_model_field(key)] = value
        policy = self.step_retry(fields, canon, source)
        if policy is not None:
            out["retry"] = policy
        return kind, out

    def _until(self, value: str) -> Any:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return self.expression(value)

    def step_retry(self, fields: dict[str, Any], canon: Loc, source: Loc) -> dict[str, Any] | None:
        policy: dict[str, Any] | None = None
        for key, field in (("maxRetries", "maxAttempts"), ("retryDelay", "interval")):
            if key in fields:  # an issue of the policy is the issue of the key that gave it
                self.note((*canon, "retry", field), self.written((*canon, key), source))
        if "retry" in fields:
            policy = self.retry(fields["retry"], (*canon, "retry"))
        if "maxRetries" in fields or "retryDelay" in fields:
            policy = dict(policy or {})
            retries = fields.get("maxRetries", 2)
            if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
                policy["max_attempts"] = retries + 1
            else:
                self.issue(
                    f"maxRetries must be a whole number >= 0, got {retries!r}",
                    (*canon, "maxRetries"),
                    code="retry",
                )
            if "retryDelay" in fields:
                policy["interval"] = fields["retryDelay"]
                policy.setdefault("max_interval", _first_delay_cap(fields["retryDelay"]))
        if policy is None and fields.get("onError") == "retry":
            policy = {}
        return policy

    def choices(self, value: Any, canon: Loc) -> Any:
        if not isinstance(value, list):
            self.issue("choices must be a list of {condition, next}", canon, code="type")
            return ()
        out = []
        for i, item in enumerate(value):
            here = (*canon, i)
            raw = self.mapping(item, here, "a choice")
            if raw is not None:
                rule = self.normalise(raw, here, here, {"condition", "next"}, "a choice")
                rule["condition"] = self.expression(rule.get("condition"))
                out.append(rule)
        return tuple(out)

    def branches(self, value: Any, canon: Loc, source: Loc) -> Any:
        if not isinstance(value, list):
            self.issue("branches must be a list of {name, steps}", canon, code="type")
            return ()
        return tuple(
            b
            for i, item in enumerate(value)
            if (b := self.branch(item, (*canon, i), (*source, i), default_name=None)) is not None
        )

    def branch(
        self, value: Any, canon: Loc, source: Loc, *, default_name: str | None
    ) -> models.Branch | None:
        self.note(canon, source)
        raw = self.mapping(value, canon, "a branch")
        if raw is None:
            return None
        fields = self.normalise(raw, canon, source, {"id", "steps"}, "a branch")
        name = fields.get("id", default_name)
        if not isinstance(name, str) or not name:
            self.issue("a branch needs a name", canon, code="missing")
            return None
        steps_raw = fields.get("steps")
        if not isinstance(steps_raw, list):
            self.issue("a branch needs a list of steps", (*canon, "steps"), code="type")
            return None
        steps = self.steps(steps_raw, (*canon, "steps"), (*source, "steps"))
        try:
            return models.Branch(name=name, steps=tuple(steps))
        except ValidationError as exc:
            self.found.extend(issues.from_validation_error(exc, canon))
            return None


def _load(doc: yaml_source.SourceDocument) -> models.WorkflowDefinition:
    reader = _Reader(doc)
    definition = reader.definition()
    found = list(reader.found)
    if definition is not None:  # with field issues too: every problem in one pass
        found.extend(validation.validate(definition))
    if found or definition is None:
        # a required field whose inline callable was refused is also "missing": report it once
        refused = {_field_of(i.location) for i in found if i.code == "not_loadable"}
        found = [i for i in found if i.code != "missing" or _field_of(i.location) not in refused]
        placed = [reader.place(i) for i in found]
        placed.sort(key=lambda i: (i.line or 0, i.column or 0))
        raise errors.DefinitionError(placed)
    return definition


def _field_of(location: str) -> tuple[str, str]:
    """``steps[0].handler`` -> ("steps[0]", "action"): action, handler and check name one field."""
    head, _, key = location.rpartition(".")
    return head, "action" if key in {"action", "handler", "check"} else key


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading allocates hundreds of thousands of objects that live until it ends; meanwhile
    the cyclic collector would walk the whole heap (a full pass costs ~30 ms in a big process:
    a 1,000-step load took 40 or 70 ms by luck). It makes no cycles that must die early."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:  # a caller that turned the collector off keeps it off
            gc.enable()


def load_yaml_text(text: str, *, path: str | None = None) -> models.WorkflowDefinition:
    with _collector_paused():
        return _load(yaml_source.parse_text(text, path=path))


def load_yaml_file(path: str | os.PathLike[str]) -> models.WorkflowDefinition:
    with _collector_paused():
        return _load(yaml_source.parse_file(path))


def load_yaml(source: str | os.PathLike[str]) -> models.WorkflowDefinition:
    """A path (``Path``, or a one-line string ending in .yaml/.yml or naming a file) or YAML text."""
    if isinstance(source, os.PathLike):
        return load_yaml_file(source)
    if not isinstance(source, str):
        raise errors.DefinitionError(
            f"load_yaml takes a path or YAML text, not {type(source).__name__}"
        )
    one_line = "\n" not in source and len(source) < 4096
    if one_line and (source.endswith((".yaml", ".yml")) or _is_file(source)):
        return load_yaml_file(source)
    return load_yaml_text(source)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def load_definitions(folder: str | os.PathLike[str]) -> list[models.WorkflowDefinition]:
    """Every ``*.yaml``/``*.yml`` under ``folder``; problems of all files are reported together."""
    root = Path(folder)
    if not root.is_dir():
        raise errors.DefinitionError([errors.Issue(f"{root} is not a folder", path=str(root))])
    found: list[errors.Issue] = []
    out: list[models.WorkflowDefinition] = []
    seen: dict[tuple[str, str], str] = {}
    files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
    for file in files:
        try:
            definition = load_yaml_file(file)
        except errors.DefinitionError as exc:
            found.extend(exc.errors)
            continue
        key = (definition.name, definition.version)
        if key in seen:
            found.append(
                errors.Issue(
                    f"workflow {definition.name!r} version {definition.version} is also defined in {seen[key]}",
                    location="id",
                    path=str(file),
                    line=1,
                    column=1,
                    code="duplicate_workflow",
                )
            )
            continue
        seen[key] = str(file)
        out.append(definition)
    if found:
        raise errors.DefinitionError(found)
    return out


def load_dict(data: dict[str, Any], *, path: str | None = None) -> models.WorkflowDefinition:
    """A definition from its ``to_dict()`` form (e.g. the canonical copy stored with instances)."""
    return _load(yaml_source.SourceDocument(data=data, path=path, positions={}, key_positions={}))


def _first_delay_cap(delay: Any) -> Any:
    """``max_interval`` for a ``retryDelay`` with no ``maxInterval``: the default cap, raised to
    the delay itself when it is longer, so that ``retryDelay`` is the first delay as written
    (``max_interval`` caps every delay, the first included)."""
    default = models.RetryPolicy.model_fields["max_interval"].default
    try:
        return max(durations.parse_duration(delay), default)
    except durations.DurationSyntaxError:
        return default  # the interval's own check reports it
