"""The simulation report: each case's outcome, and the graph's coverage summed over the cases.

Plain data with a ``to_dict`` for ``--json``; the command line draws it as tables. Percentages
(unrounded: 99.97 is not 100) count distinct graph parts (an edge taken by three cases counts once), so 100 means every part
was reached by at least one case; a graph with no parts of a kind is fully covered in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from statemachine.simulation.coverage import Edge, RulePoint


@dataclass(frozen=True)
class CaseResult:
    """One case's run: its final status, output or error, the steps it started (first start
    order, map items folded), how often each mocked action was called, what went unsaid
    (``notes``: an event that came after the end) and how much simulated time it took."""

    name: str
    status: str
    output: Any
    error: dict[str, Any] | None
    steps: tuple[str, ...]
    edges: frozenset[Edge]
    calls: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    elapsed: float | None = None  # simulated seconds from start to end; None: not finished
    unmet: tuple[str, ...] = ()  # the case's ``expect`` that the run did not meet
    instance_id: str = ""

    @property
    def passed(self) -> bool:
        return not self.unmet

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "steps": list(self.steps),
            "edges": [_edge_dict(e) for e in sorted(self.edges, key=Edge.sort_key)],
            "calls": dict(self.calls),
            "notes": list(self.notes),
            "elapsed": self.elapsed,
            "passed": self.passed,
            "unmet": list(self.unmet),
        }


@dataclass(frozen=True)
class RuleUse:
    """A trigger rule and what it decided across the cases (``ran``, ``skipped: <reason>``)."""

    point: RulePoint
    outcomes: frozenset[str]

    @property
    def exercised(self) -> bool:
        return bool(self.outcomes)


@dataclass(frozen=True)
class Coverage:
    """Graph parts and how many cases reached each (0: none did)."""

    steps: dict[str, int]
    edges: dict[Edge, int]
    rules: tuple[RuleUse, ...]

    @property
    def step_coverage(self) -> float:
        return _percent(self.steps.values())

    @property
    def edge_coverage(self) -> float:
        return _percent(self.edges.values())

    @property
    def choice_branches(self) -> dict[Edge, int]:
        return {e: n for e, n in self.edges.items() if e.kind in ("choice", "default")}

    @property
    def choice_coverage(self) -> float:
        return _percent(self.choice_branches.values())

    @property
    def rule_coverage(self) -> float:
        return _percent(len(r.outcomes) for r in self.rules)

    @property
    def uncovered_steps(self) -> list[str]:
        return [s for s, n in self.steps.items() if not n]

    @property
    def uncovered_edges(self) -> list[Edge]:
        return [e for e, n in self.edges.items() if not n]

    @property
    def unexercised_rules(self) -> list[RulePoint]:
        return [r.point for r in self.rules if not r.exercised]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": {
                "percent": self.step_coverage,
                "uncovered": self.uncovered_steps,
                "runs": dict(self.steps),
            },
            "edges": {
                "percent": self.edge_coverage,
                "uncovered": [_edge_dict(e) for e in self.uncovered_edges],
                "all": [{**_edge_dict(e), "cases": n} for e, n in self.edges.items()],
            },
            "choices": {
                "percent": self.choice_coverage,
                "uncovered": [_edge_dict(e) for e, n in self.choice_branches.items() if not n],
            },
            "trigger_rules": {
                "percent": self.rule_coverage,
                "all": [
                    {"step": r.point.step, "rule": r.point.rule, "outcomes": sorted(r.outcomes)}
                    for r in self.rules
                ],
                "unexercised": [r.step for r in self.unexercised_rules],
            },
        }


@dataclass(frozen=True)
class SimulationReport:
    """What ``simulate`` returns: per-case results and the coverage of ``workflow``'s graph."""

    workflow: str
    version: str
    cases: tuple[CaseResult, ...]
    coverage: Coverage

    @property
    def failed_cases(self) -> list[CaseResult]:
        """Cases whose ``expect`` the run did not meet."""
        return [c for c in self.cases if not c.passed]

    def case(self, name: str) -> CaseResult:
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "cases": [c.to_dict() for c in self.cases],
            "coverage": self.coverage.to_dict(),
        }


def build_coverage(
    steps: Sequence[str],
    edges: Sequence[Edge],
    points: Sequence[RulePoint],
    results: Sequence[CaseResult],
    outcomes: dict[str, set[str]],
) -> Coverage:
    """Count, for every graph part, the cases that reached it."""
    return Coverage(
        steps={s: sum(s in r.steps for r in results) for s in steps},
        edges={e: sum(e in r.edges for r in results) for e in edges},
        rules=tuple(RuleUse(p, frozenset(outcomes.get(p.step, ()))) for p in points),
    )


def unmet(
    expect: dict[str, Any], status: str, output: Any, error: dict[str, Any] | None
) -> list[str]:
    """What of ``expect`` (status, output, a text of the error message) the run did not meet."""
    found = []
    if "status" in expect and expect["status"] != status:
        why = f" ({error.get('type')}: {error.get('message')})" if error else ""
        found.append(f"expected status {expect['status']}, got {status}{why}")
    if "output" in expect and expect["output"] != output:
        found.append(f"expected output {expect['output']!r}, got {output!r}")
    if "error" in expect:
        message = str((error or {}).get("message", ""))
        if error is None or str(expect["error"]) not in message:
            got = f"{error.get('type')}: {message}" if error else "no error"
            found.append(f"expected an error with {str(expect['error'])!r}, got {got}")
    return found


def _percent(counts: Any) -> float:
    values = list(counts)
    if not values:
        return 100.0
    return 100.0 * sum(1 for v in values if v) / len(values)


def _edge_dict(edge: Edge) -> dict[str, Any]:
    return {"from": edge.source, "to": edge.target, "kind": edge.kind, "label": edge.label}
