"""Simulation cases: what a run is fed (input, action results, events, time), read and checked.

A cases file is a YAML list; each case is ``{name, input, actions, events, advance}``. Every
mistake an author can make in one (a bad duration, an unknown key, a result that is neither a
value nor ``{raise: ...}``) is a ``SimulationError`` naming the case, raised before anything
runs: a typo must not look like a workflow bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from statemachine import errors
from statemachine.definition import durations, issues

CASE_KEYS = ("name", "description", "input", "actions", "events", "advance", "expect")
EXPECT_KEYS = ("status", "output", "error")
EVENT_KEYS = ("name", "data", "after")


class SimulationError(errors.StatemachineError):
    """A cases file or a simulation cannot be run as written; the message names the case."""

    code = "simulation_error"


@dataclass(frozen=True)
class Outcome:
    """One call's result: a value to return, or an exception to raise."""

    value: Any = None
    error: BaseException | None = None


class ActionFailed(Exception):
    """What ``{raise: message}`` raises in a simulated action (retried like any exception)."""


@dataclass(frozen=True)
class Mock:
    """An action's scripted results: ``repeat`` (one outcome for every call) or a sequence."""

    outcomes: tuple[Outcome, ...]
    repeat: bool


@dataclass(frozen=True)
class Event:
    name: str
    data: Any = None
    after: float = 0.0


@dataclass(frozen=True)
class Case:
    name: str
    input: Any = None
    actions: Mapping[str, Mock] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    advance: float = 0.0
    description: str | None = None
    expect: Mapping[str, Any] = field(default_factory=dict)  # status, output, error (text)


def load_cases(source: str | Path | Sequence[Any]) -> list[Case]:
    """Cases from a YAML file path, YAML text, or a list of dicts (and ``Case`` objects)."""
    raw: Any = source
    where = "cases"
    if isinstance(source, Path) or (isinstance(source, str) and _names_a_file(source)):
        path = Path(source)
        if not path.is_file():
            raise SimulationError(f"cases file {str(source)!r} not found")
        where = str(path)
        raw = _parse_yaml(path.read_text(encoding="utf-8"), where)
    elif isinstance(source, str):
        raw = _parse_yaml(source, where)
    if isinstance(raw, Mapping) and "cases" in raw:
        raw = raw["cases"]
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise SimulationError(f"{where}: expected a list of cases, got {type(raw).__name__}")
    cases = [item if isinstance(item, Case) else parse_case(item, i) for i, item in enumerate(raw)]
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise SimulationError(f"{where}: two cases are named {case.name!r}")
        seen.add(case.name)
    if not cases:
        raise SimulationError(f"{where}: no cases")
    return cases


def _names_a_file(text: str) -> bool:
    """One line that does not open a YAML list or mapping is a path (``[]`` is YAML text)."""
    return "\n" not in text and not text.lstrip().startswith(("-", "[", "{"))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SimulationError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None


def parse_case(raw: Any, index: int) -> Case:
    """One case from its dict form; ``index`` names it when it has no ``name``."""
    if not isinstance(raw, Mapping):
        raise SimulationError(f"case #{index + 1}: expected a mapping, got {type(raw).__name__}")
    name = str(raw.get("name") or f"case #{index + 1}")
    _check_keys(raw, CASE_KEYS, f"case {name!r}", "a case")
    actions = raw.get("actions") or {}
    if not isinstance(actions, Mapping):
        raise SimulationError(f"case {name!r}: actions must map action names to results")
    events = raw.get("events") or []
    if not isinstance(events, Sequence) or isinstance(events, str):
        raise SimulationError(f"case {name!r}: events must be a list of {{name, data, after}}")
    return Case(
        name=name,
        input=raw.get("input", {}),
        actions={str(k): parse_mock(v, name, str(k)) for k, v in actions.items()},
        events=tuple(_parse_event(e, name, i) for i, e in enumerate(events)),
        advance=seconds(raw.get("advance"), f"case {name!r}: advance"),
        description=raw.get("description"),
        expect=_parse_expect(raw.get("expect"), name),
    )


def _parse_expect(raw: Any, case: str) -> dict[str, Any]:
    """``expect: completed`` or ``expect: {status, output, error}`` (error: text its message has)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = {"status": raw}
    if not isinstance(raw, Mapping):
        raise SimulationError(f"case {case!r}: expect is a status or {{status, output, error}}")
    _check_keys(raw, EXPECT_KEYS, f"case {case!r}: expect", "expect")
    return dict(raw)


def parse_mock(raw: Any, case: str, action: str) -> Mock:
    """``value``, ``{raise: message}``, ``{return: value}``, an exception, or a list of those."""
    if isinstance(raw, list):
        if not raw:
            raise SimulationError(f"case {case!r}: action {action!r} has an empty list of results")
        return Mock(tuple(_outcome(v, case, action) for v in raw), repeat=False)
    return Mock((_outcome(raw, case, action),), repeat=True)


def _outcome(raw: Any, case: str, action: str) -> Outcome:
    if isinstance(raw, BaseException):
        return Outcome(error=raw)
    if isinstance(raw, Mapping) and "raise" in raw:
        extra = set(raw) - {"raise", "critical"}
        if extra:
            raise SimulationError(
                f"case {case!r}: action {action!r}: {{raise: ...}} takes only 'critical' beside "
                f"it, not {', '.join(sorted(map(str, extra)))}"
            )
        message = str(raw["raise"])
        kind = errors.CriticalError if raw.get("critical") else ActionFailed
        return Outcome(error=kind(message))
    if isinstance(raw, Mapping) and set(raw) == {"return"}:
        return Outcome(value=raw["return"])
    return Outcome(value=raw)


def _parse_event(raw: Any, case: str, index: int) -> Event:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise SimulationError(f"case {case!r}: events[{index}] needs a name: {{name, data, after}}")
    _check_keys(raw, EVENT_KEYS, f"case {case!r}: event {raw['name']!r}", "an event")
    what = f"case {case!r}: event {raw['name']!r}: after"
    return Event(name=raw["name"], data=raw.get("data"), after=seconds(raw.get("after"), what))


def seconds(value: Any, what: str) -> float:
    """A duration (``"3d"``, ``90``, a timedelta) in seconds; ``None`` is zero."""
    if value is None:
        return 0.0
    try:
        result = float(durations.parse_duration(value))
    except (durations.DurationSyntaxError, errors.DefinitionError, TypeError, ValueError) as exc:
        raise SimulationError(f"{what}: {' '.join(str(exc).split())}") from None
    if result < 0:
        raise SimulationError(f"{what}: time cannot run backwards ({value!r})")
    return result


def _check_keys(raw: Mapping[Any, Any], allowed: tuple[str, ...], where: str, noun: str) -> None:
    for key in raw:
        if key not in allowed:
            hint = issues.did_you_mean(str(key), allowed)
            raise SimulationError(
                f"{where}: unknown key {key!r}{hint}; {noun} takes {', '.join(allowed)}"
            )
