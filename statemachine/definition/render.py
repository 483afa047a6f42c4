"""Dump a definition: canonical dict (the hash input and the YAML form), YAML, Mermaid and DOT.

The dict uses the YAML keys (camelCase) and omits defaults, so a builder definition and its YAML
twin dump, and therefore hash, the same. Inline callables are dumped by qualified name with
``loadable: false``: YAML can show them but not load them back.

It reads a definition through ``Workflow``, the fields it dumps, rather than importing
``models``: the definition offers these dumps (and its hash, the dict's digest) as methods, so it
imports this module, and this module only knows the parts (parts <- graph <- render <- models).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import yaml

from statemachine.definition import durations, graph, parts

NOT_LOADABLE = "loadable"


class Workflow(Protocol):
    """What the dumps read of a definition; ``models.WorkflowDefinition`` has it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def default_retry(self) -> parts.RetryPolicy | None: ...
    @property
    def triggers(self) -> Sequence[parts.Trigger]: ...
    @property
    def schedules(self) -> Sequence[parts.Schedule]: ...
    @property
    def concurrency(self) -> parts.Concurrency | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def on_complete(self) -> parts.Fn | None: ...
    @property
    def input_schema(self) -> parts.Schema | None: ...
    @property
    def steps(self) -> Sequence[parts.StepBase]: ...


def callable_ref(fn: object) -> dict[str, Any]:
    module = getattr(fn, "__module__", None) or ""
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return {"callable": f"{module}.{qual}" if module else qual, NOT_LOADABLE: False}


def _ref(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, type) or callable(value):
        return callable_ref(value)
    return value


def _dur(seconds: float | None) -> Any:
    return None if seconds is None else durations.format_duration(seconds)


def retry_to_dict(policy: parts.RetryPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "maxAttempts": policy.max_attempts,
        "interval": _dur(policy.interval),
        "backoffRate": policy.backoff_rate,
        "maxInterval": _dur(policy.max_interval),
    }
    if policy.retry_on:
        out["retryOn"] = [callable_ref(t) for t in policy.retry_on]
    return out


def _put(out: dict[str, Any], key: str, value: Any, default: Any = None) -> None:
    if value is not None and value != default:
        out[key] = value


def step_to_dict(step: parts.StepBase) -> dict[str, Any]:
    out: dict[str, Any] = {"id": step.name}
    if not isinstance(step, parts.TaskStep):
        out["type"] = step.kind
    _put(out, "title", step.title)
    _put(out, "description", step.description)
    _put(out, "dependsOn", list(step.depends_on), [])
    if not isinstance(step, parts.LoopStep):
        _put(out, "condition", _ref(step.condition))
    _put(out, "trigger", step.trigger, parts.DEFAULT_TRIGGER_RULE)
    _put(out, "wait", _dur(step.delay))
    match step:
        case parts.TaskStep():
            if isinstance(step.handler, str):
                out["action"] = step.handler
            else:
                out["handler"] = callable_ref(step.handler)
            _put(out, "input", _ref(step.input))
            _put(out, "inputSchema", _ref(step.input_schema))
            _put(out, "outputSchema", _ref(step.output_schema))
            if step.retry is not None:
                out["retry"] = retry_to_dict(step.retry)
            _put(out, "timeout", _dur(step.timeout))
            _put(out, "compensate", _ref(step.compensate))
        case parts.ChoiceStep():
            out["choices"] = [
                {"condition": _ref(r.condition), "next": r.next} for r in step.choices
            ]
            _put(out, "default", step.default)
        case parts.ParallelStep():
            out["branches"] = [branch_to_dict(b) for b in step.branches]
            _put(out, "mode", step.mode, "all")
            _put(out, "failure", step.failure, "fail-fast")
            _put(out, "maxConcurrency", step.max_concurrency)
        case parts.PassStep():
            _put(out, "result", step.result)
            _put(out, "transform", _ref(step.transform))
        case parts.PollStep():
            if isinstance(step.check, str):
                out["action"] = step.check
            else:
                out["check"] = callable_ref(step.check)
            _put(out, "input", _ref(step.input))
            out["interval"] = _dur(step.interval)
            _put(out, "timeout", _dur(step.timeout))
            _put(out, "maxAttempts", step.max_attempts)
        case parts.LoopStep():
            out["condition"] = _ref(step.condition)
            out["target"] = step.target
            _put(out, "interval", _dur(step.interval))
            _put(out, "maxIterations", step.max_iterations)
            _put(out, "timeout", _dur(step.timeout))
        case parts.WaitStep():
            _put(out, "duration", _dur(step.duration))
            if isinstance(step.until, datetime):
                out["until"] = step.until.isoformat()
            else:
                _put(out, "until", _ref(step.until))
            _put(out, "event", step.event)
            _put(out, "timeout", _dur(step.timeout))
        case parts.MapStep():
            out["items"] = _ref(step.items)
            out["iterator"] = branch_to_dict(step.iterator)
            _put(out, "maxConcurrency", step.max_concurrency)
        case parts.SubworkflowStep():
            out["workflow"] = step.workflow
            _put(out, "input", _ref(step.input))
    _put(out, "next", step.next)
    _put(out, "end", step.end, False)
    _put(out, "onError", step.on_error, "fail")
    _put(out, "errorBranch", step.error_next)
    return out


def branch_to_dict(branch: parts.Branch) -> dict[str, Any]:
    return {"name": branch.name, "steps": [step_to_dict(s) for s in branch.steps]}


def schedule_to_dict(schedule: parts.Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "cron", schedule.cron)
    _put(out, "every", _dur(schedule.every))
    out["timezone"] = schedule.timezone
    _put(out, "input", schedule.input)
    out.update(overlap=schedule.overlap, catchup=schedule.catchup)
    return out


def to_dict(definition: Workflow) -> dict[str, Any]:
    out: dict[str, Any] = {"id": definition.name, "version": definition.version}
    _put(out, "title", definition.title)
    _put(out, "description", definition.description)
    _put(out, "timeout", _dur(definition.timeout))
    if definition.default_retry is not None:
        out["defaultRetry"] = retry_to_dict(definition.default_retry)
    if definition.triggers:
        out["triggers"] = [
            {"event": t.event, **({"condition": t.condition} if t.condition else {})}
            for t in definition.triggers
        ]
    if definition.schedules:
        out["schedules"] = [schedule_to_dict(s) for s in definition.schedules]
    _put(out, "onComplete", _ref(definition.on_complete))
    _put(out, "inputSchema", _ref(definition.input_schema))
    if definition.concurrency is not None:
        out["concurrency"] = definition.concurrency.model_dump(exclude_none=True)
    if definition.priority:
        out["priority"] = definition.priority
    out["steps"] = [step_to_dict(s) for s in definition.steps]
    return out


def to_yaml(definition: Workflow) -> str:
    return yaml.safe_dump(to_dict(definition), sort_keys=False, allow_unicode=True, width=100)


# --- diagrams -------------------------------------------------------------------------------


def _node_id(path: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", path)


def _shape(step: parts.StepBase, label: str) -> str:
    text = label.replace('"', "'")
    if isinstance(step, parts.ChoiceStep):
        return '{"' + text + '"}'
    if isinstance(step, parts.WaitStep | parts.PollStep):
        return '(["' + text + '"])'
    if isinstance(step, parts.PassStep):
        return '(["' + text + '"])' if step.end else '["' + text + '"]'
    return '["' + text + '"]'


def _scope_lines_mermaid(steps: Sequence[parts.StepBase], prefix: str, indent: str) -> list[str]:
    lines: list[str] = []
    for step in steps:
        path = prefix + step.name
        branches = parts.child_branches(step)
        if branches:
            lines.append(f'{indent}subgraph {_node_id(path)}["{step.name} ({step.kind})"]')
            lines.append(f"{indent}  direction TB")
            for br in branches:
                bpath = f"{path}/{br.name}/"
                lines.append(f'{indent}  subgraph {_node_id(bpath)}["{br.name}"]')
                lines.extend(_scope_lines_mermaid(br.steps, bpath, indent + "    "))
                lines.append(f"{indent}  end")
            lines.append(f"{indent}end")
        else:
            lines.append(f"{indent}{_node_id(path)}{_shape(step, step.title or step.name)}")
    for src, dst, label in graph.edges(steps):
        arrow = f'-->|"{label}"|' if label else "-->"
        if label == "on error":
            arrow = '-.->|"on error"|'
        lines.append(f"{indent}{_node_id(prefix + src)} {arrow} {_node_id(prefix + dst)}")
    return lines


def _start_label(definition: Workflow) -> str:
    """The start node, with what decides when an instance may start (its flow control)."""
    notes = []
    if definition.concurrency is not None:
        limit = definition.concurrency
        per = f" per {limit.key}" if limit.key is not None else ""
        notes.append(f"at most {limit.limit} running{per}")
    if definition.priority:
        notes.append(f"priority {definition.priority}")
    label = "start" if not notes else "start: " + "; ".join(notes)
    return label.replace('"', "'")


def to_mermaid(definition: Workflow) -> str:
    lines = ["flowchart TD"]
    lines.extend(_scope_lines_mermaid(definition.steps, "", "  "))
    start = graph.roots(definition.steps)
    label = _start_label(definition)
    lines.append("  start((start))" if label == "start" else f'  start(("{label}"))')
    lines.extend(f"  start --> {_node_id(r)}" for r in start)
    for i, sched in enumerate(definition.schedules):  # what starts it by itself
        label = f"{sched.spec} ({sched.timezone})".replace('"', "'")
        lines.append(f'  schedule_{i}[/"{label}"/] -.-> start')
    return "\n".join(lines) + "\n"


def _scope_lines_dot(steps: Sequence[parts.StepBase], prefix: str, indent: str) -> list[str]:
    lines: list[str] = []
    for step in steps:
        path = prefix + step.name
        branches = parts.child_branches(step)
        if branches:
            lines.append(f"{indent}subgraph cluster_{_node_id(path)} {{")
            lines.append(f'{indent}  label="{step.name} ({step.kind})";')
            for br in branches:
                bpath = f"{path}/{br.name}/"
                lines.append(f"{indent}  subgraph cluster_{_node_id(bpath)} {{")
                lines.append(f'{indent}    label="{br.name}";')
                lines.extend(_scope_lines_dot(br.steps, bpath, indent + "    "))
                lines.append(f"{indent}  }}")
            lines.append(f"{indent}}}")
            lines.append(f'{indent}{_node_id(path)} [label="{step.name}", shape=point];')
        else:
            shape = "diamond" if isinstance(step, parts.ChoiceStep) else "box"
            label = (step.title or step.name).replace('"', "'")
            lines.append(f'{indent}{_node_id(path)} [label="{label}", shape={shape}];')
    for src, dst, label in graph.edges(steps):
        attrs = f' [label="{label}"]' if label else ""
        if label == "on error":
            attrs = ' [label="on error", style=dashed]'
        lines.append(f"{indent}{_node_id(prefix + src)} -> {_node_id(prefix + dst)}{attrs};")
    return lines


def to_dot(definition: Workflow) -> str:
    name = definition.name.replace('"', "'")
    lines = [f'digraph "{name}" {{', "  rankdir=TB;"]
    lines.extend(_scope_lines_dot(definition.steps, "", "  "))
    lines.append("}")
    return "\n".join(lines) + "\n"
