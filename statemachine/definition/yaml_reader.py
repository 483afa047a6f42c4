"""One YAML document -> the fields of a ``WorkflowDefinition``, every problem collected.

Keys are normalised to their canonical form (``yaml_keys``) and each step is read by its type.
Every canonical location is remembered with the source location it came from, so any issue,
from pydantic, from validation or from here, is reported at the author's own line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from statemachine import errors
from statemachine.definition import (
    builder,
    durations,
    issues,
    models,
    yaml_keys,
    yaml_positions,
    yaml_source,
)

Loc = issues.Loc

_TEMPLATE = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.S)


class Reader:
    """Walks one document; collects issues instead of raising, so every problem is reported."""

    def __init__(self, doc: yaml_source.SourceDocument) -> None:
        self.doc = doc
        self.found: list[errors.Issue] = []
        self.positions = yaml_positions.Positions(doc)

    def issue(self, message: str, canon: Loc, *, code: str = "invalid") -> None:
        self.found.append(
            errors.Issue(message=message, location=issues.format_loc(canon), code=code)
        )

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
            ckey = yaml_keys.canonical_key(str(key))
            if titled and key == "name":  # workflow.do's shape: `id` names it, `name` titles it
                ckey = "title"
            self.positions.note((*canon, ckey), (*source, key))
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
        top = self.normalise(raw, (), (), yaml_keys.TOP_KEYS, "the workflow")
        fields: dict[str, Any] = {}
        if "id" not in top:
            self.issue("the workflow needs an id (or name)", (), code="missing")
        for key in ("id", "version", "title", "description", "timeout", "priority"):
            if key in top:
                fields[yaml_keys.FIELD.get(key, key)] = top[key]
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
        if "schedules" in top:
            fields["schedules"] = self.schedules(top["schedules"])
        if "concurrency" in top:
            raw_limit = self.mapping(top["concurrency"], ("concurrency",), "concurrency")
            if raw_limit is not None:
                limits = yaml_keys.CONCURRENCY_KEYS
                fields["concurrency"] = self.normalise(
                    raw_limit, ("concurrency",), ("concurrency",), limits, "concurrency"
                )
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
            self.positions.note(canon, canon)
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

    def schedules(self, value: Any) -> tuple[models.Schedule, ...]:
        if not isinstance(value, list):
            self.issue("schedules must be a list", ("schedules",), code="type")
            return ()
        out: list[models.Schedule] = []
        for i, item in enumerate(value):
            canon = ("schedules", i)
            self.positions.note(canon, canon)
            raw = self.mapping(item, canon, "a schedule")
            if raw is None:
                continue
            fields = self.normalise(raw, canon, canon, yaml_keys.SCHEDULE_KEYS, "a schedule")
            try:
                out.append(models.Schedule(**fields))
            except ValidationError as exc:
                self.found.extend(issues.from_validation_error(exc, canon))
        return tuple(out)

    def retry(self, value: Any, canon: Loc) -> dict[str, Any] | None:
        raw = self.mapping(value, canon, "a retry policy")
        if raw is None:
            return None
        fields = self.normalise(raw, canon, canon, yaml_keys.RETRY_KEYS, "a retry policy")
        if "retryOn" in fields:
            self.issue(
                "retryOn names Python exception types and cannot be given in YAML",
                (*canon, "retryOn"),
                code="not_loadable",
            )
        return {yaml_keys.model_field(k): v for k, v in fields.items() if k != "retryOn"}

    def steps(self, raw_steps: list[Any], canon: Loc, source: Loc) -> list[models.StepBase]:
        collected: list[tuple[str, dict[str, Any]]] = []
        indices: list[int] = []
        for i, raw in enumerate(raw_steps):
            c, s = (*canon, i), (*source, i)
            self.positions.note(c, s)
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
            ckey = yaml_keys.canonical_key(str(key))
            if ckey in {"id", "next", "end", "dependsOn", "errorBranch", "onError", "condition"}:
                fields.setdefault(yaml_keys.model_field(ckey), value)
        return fields

    def step(
        self, raw: dict[str, Any], canon: Loc, source: Loc
    ) -> tuple[str, dict[str, Any]] | None:
        kind = raw.get("type")
        if kind is None:
            kind = "task" if ("action" in raw or "handler" in raw) else None
        if kind not in yaml_keys.OWN:
            got = "no type and no action" if kind is None else f"unknown type {kind!r}"
            hint = issues.did_you_mean(str(kind), yaml_keys.OWN) if kind is not None else ""
            if kind is None:  # a misspelt `action:` is the usual cause: name it
                typo = next((str(k) for k in raw if issues.did_you_mean(str(k), ["action"])), None)
                hint = f" (did you mean 'action' instead of {typo!r}?)" if typo else ""
            self.positions.note((*canon, "type"), (*source, "type"))
            self.issue(
                f"step has {got}{hint}; type is one of {', '.join(models.STEP_TYPES)}",
                (*canon, "type") if kind is not None else canon,
                code="step_type",
            )
            return None
        fields = self.normalise(raw, canon, source, yaml_keys.ALLOWED[kind], f"a {kind} step")
        fields.pop("type", None)
        out: dict[str, Any] = {}
        for key, value in fields.items():
            here = (*canon, key)
            if self.not_loadable(value, here):
                continue
            if key in {"maxRetries", "retryDelay", "retry"}:
                continue
            if key == "onError" and value not in yaml_keys.ON_ERROR:
                hint = issues.did_you_mean(str(value), yaml_keys.ON_ERROR)
                msg = f"{value!r} is not one of {', '.join(yaml_keys.ON_ERROR)}{hint}"
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
            out[yaml_keys.model_field(key)] = value
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
                self.positions.note(
                    (*canon, "retry", field), self.positions.written((*canon, key), source)
                )
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
        self.positions.note(canon, source)
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


def _first_delay_cap(delay: Any) -> Any:
    """``max_interval`` for a ``retryDelay`` with no ``maxInterval``: the default cap, raised to
    the delay itself when it is longer, so that ``retryDelay`` is the first delay as written
    (``max_interval`` caps every delay, the first included)."""
    default = models.RetryPolicy.model_fields["max_interval"].default
    try:
        return max(durations.parse_duration(delay), default)
    except durations.DurationSyntaxError:
        return default  # the interval's own check reports it
