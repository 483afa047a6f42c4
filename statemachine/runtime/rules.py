"""Airflow's trigger rules: does a DAG step run now, wait, or never run?

Pure functions over the states of a step's dependencies, with Airflow's meaning (its
``TriggerRuleDep`` as the scheduler runs it, ``flag_upstream_failed`` on): a rule that can no
longer be met decides at once, without waiting for the other dependencies, and a step skipped
because a dependency failed is ``upstream_failed`` for its own dependents, so a failure keeps
counting as one however many hops down the graph it is looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from statemachine.runtime.state import StepView
from statemachine.vocabulary import StepStatus

# what a dependency is, for trigger rules
SUCCESS = StepStatus.COMPLETED
SKIPPED = StepStatus.SKIPPED
FAILED = StepStatus.FAILED  # also a failure taken by onError, and a cancelled step
UPSTREAM_FAILED = "upstream_failed"  # skipped because one of its own dependencies failed
DONE = frozenset({SUCCESS, SKIPPED, FAILED, UPSTREAM_FAILED})

Verdict = Literal["run", "wait", "skip", "upstream_failed"]


def dependency_state(st: StepView | None) -> str:
    """``completed | skipped | upstream_failed | failed``, or the status of a dependency that
    has not finished (``pending`` when it has no record yet)."""
    if st is None:
        return StepStatus.PENDING
    if st.status == StepStatus.SKIPPED:
        return UPSTREAM_FAILED if (st.reason or {}).get(UPSTREAM_FAILED) else SKIPPED
    if st.status == StepStatus.CANCELLED:
        return FAILED
    return st.status


@dataclass(frozen=True)
class Counts:
    """Airflow's upstream counts."""

    upstream: int
    success: int
    skipped: int
    failed: int
    upstream_failed: int

    @classmethod
    def of(cls, states: Sequence[str]) -> Counts:
        return cls(
            upstream=len(states),
            success=states.count(SUCCESS),
            skipped=states.count(SKIPPED),
            failed=states.count(FAILED),
            upstream_failed=states.count(UPSTREAM_FAILED),
        )

    @property
    def failures(self) -> int:
        return self.failed + self.upstream_failed

    @property
    def all_done(self) -> bool:
        return self.success + self.skipped + self.failures == self.upstream


def verdict(rule: str, states: Sequence[str]) -> Verdict:
    """What ``rule`` says given the dependencies' states (see ``dependency_state``)."""
    c = Counts.of(states)
    if rule == "always" or c.upstream == 0:
        return "run"
    if rule == "all_success":
        if c.failures:
            return "upstream_failed"
        if c.skipped:
            return "skip"
        return "run" if c.success == c.upstream else "wait"
    if rule == "all_failed":
        if c.success or c.skipped:
            return "skip"
        return "run" if c.failures == c.upstream else "wait"
    if rule == "all_done":
        return "run" if c.all_done else "wait"
    if rule == "one_success":
        if c.success:
            return "run"
        if not c.all_done:
            return "wait"
        return "skip" if c.skipped == c.upstream else "upstream_failed"
    if rule == "one_failed":
        if c.failures:
            return "run"
        return "skip" if c.all_done else "wait"
    if rule == "none_failed":
        if c.failures:
            return "upstream_failed"
        return "run" if c.all_done else "wait"
    if rule == "none_failed_min_one_success":
        if c.failures:
            return "upstream_failed"
        if not c.all_done:
            return "wait"
        return "run" if c.success else "skip"
    if rule == "none_skipped":
        if c.skipped:
            return "skip"
        return "run" if c.all_done else "wait"
    raise ValueError(f"unknown trigger rule {rule!r}")  # validation refuses it before this


def skip_reason(rule: str, verdict_: Verdict, dependencies: dict[str, str]) -> dict[str, Any]:
    """The reason a step whose rule can no longer be met is skipped (history's shape: the kind
    under ``reason``); ``upstream_failed`` says whether it counts as failed for its dependents."""
    return {
        "reason": "trigger_rule",
        "rule": rule,
        "dependencies": dependencies,
        UPSTREAM_FAILED: verdict_ == "upstream_failed",
    }


def prev_of(depends_on: Sequence[str], states: Sequence[str]) -> str | None:
    """The dependency whose output a step that runs receives as ``prev``: the last one listed
    when all are done; a step that runs early (``one_success``, ``one_failed``, ``always``) gets
    the last one that succeeded, else the last one done, else none (its scope's input)."""
    if all(s in DONE for s in states):
        return depends_on[-1] if depends_on else None
    done = [d for d, s in zip(depends_on, states, strict=True) if s in DONE]
    succeeded = [d for d, s in zip(depends_on, states, strict=True) if s == SUCCESS]
    found = succeeded or done
    return found[-1] if found else None
