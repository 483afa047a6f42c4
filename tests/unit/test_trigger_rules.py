"""Trigger rules against Airflow's own cases, then through the interpreter.

The first table ports the cases of Airflow's ``test_trigger_rule_dep.py`` (apache/airflow,
``airflow-core/tests/unit/ti_deps/deps/``) that map onto our rules. Airflow fakes upstream
*counts* (success, skipped, failed, upstream_failed, done); here each count becomes that many
dependencies in that state, and a dependency not done is ``running``. Airflow's outcome under
``flag_upstream_failed`` (as its scheduler runs it) maps to ours: the dep passes -> ``run``; it
fails without a new state -> ``wait``; new state SKIPPED -> ``skip``; UPSTREAM_FAILED ->
``upstream_failed`` (a skipped step that counts as failed for its own dependents).
Airflow-only inputs (``removed``, setup/teardown, ``one_done``, ``all_skipped``, mapped tasks,
past depends) have no counterpart and are left out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from statemachine import branch, workflow
from statemachine.runtime import rules
from statemachine.runtime.state import StepState
from tests.unit.driver import Driver


def states(
    success: int = 0, skipped: int = 0, failed: int = 0, upstream_failed: int = 0, running: int = 0
) -> list[str]:
    return (
        ["completed"] * success
        + ["skipped"] * skipped
        + ["failed"] * failed
        + ["upstream_failed"] * upstream_failed
        + ["running"] * running
    )


AIRFLOW_CASES = [
    # test_no_upstream_tasks: nothing to check, the dep passes
    pytest.param("all_done", states(), "run", id="no_upstream_tasks"),
    # test_always_tr: passes with an upstream not done
    pytest.param("always", states(running=1), "run", id="always_tr"),
    # test_one_success_tr_success (Airflow's fake counts there say done=2 of 8; we count them
    # all done: one success is enough)
    pytest.param(
        "one_success",
        states(success=1, skipped=2, failed=3, upstream_failed=2),
        "run",
        id="one_success_tr_success",
    ),
    # test_one_success_tr_failure (removed=1 dropped)
    pytest.param(
        "one_success",
        states(skipped=1, failed=1, upstream_failed=1),
        "upstream_failed",
        id="one_success_tr_failure",
    ),
    pytest.param("one_success", states(skipped=2), "skip", id="one_success_tr_failure_all_skipped"),
    pytest.param("one_failed", states(success=2), "skip", id="one_failure_tr_failure"),
    pytest.param("one_failed", states(skipped=2, failed=2), "run", id="one_failure_tr_success"),
    pytest.param(
        "one_failed",
        states(skipped=2, upstream_failed=2),
        "run",
        id="one_failure_tr_success_no_failed",
    ),
    pytest.param("all_success", states(success=1), "run", id="all_success_tr_success"),
    pytest.param(
        "all_success",
        states(success=1, failed=1),
        "upstream_failed",
        id="all_success_tr_failure",
    ),
    pytest.param("all_success", states(success=1, skipped=1), "skip", id="all_success_tr_skip"),
    pytest.param("none_failed", states(success=1, skipped=1), "run", id="none_failed_tr_success"),
    pytest.param(
        "none_failed",
        states(success=1, skipped=1, failed=1),
        "upstream_failed",
        id="none_failed_tr_failure",
    ),
    pytest.param(
        "none_failed",
        states(success=1, skipped=1, upstream_failed=1),
        "upstream_failed",
        id="none_failed_tr_failure_with_upstream_failure",
    ),
    pytest.param(
        "none_failed_min_one_success",
        states(success=1, skipped=1),
        "run",
        id="none_failed_min_one_success_tr_success",
    ),
    pytest.param(
        "none_failed_min_one_success",
        states(skipped=2),
        "skip",
        id="none_failed_min_one_success_tr_skipped",
    ),
    pytest.param(
        "none_failed_min_one_success",
        states(success=1, skipped=1, failed=1),
        "upstream_failed",
        id="none_failed_min_one_success_tr_failure",
    ),
    pytest.param(
        "none_failed_min_one_success",
        states(success=1, skipped=1, upstream_failed=1),
        "upstream_failed",
        id="none_failed_min_one_success_tr_upstream_failure",
    ),
    pytest.param("all_failed", states(failed=2), "run", id="all_failed_tr_success"),
    pytest.param("all_failed", states(success=2), "skip", id="all_failed_tr_failure"),
    pytest.param("all_done", states(success=2), "run", id="all_done_tr_success"),
    # test_all_done_tr_failure: one upstream done, one not
    pytest.param("all_done", states(success=1, running=1), "wait", id="all_done_tr_failure"),
    pytest.param("none_skipped", states(success=2, failed=1), "run", id="none_skipped_tr_success"),
    pytest.param(
        "none_skipped", states(success=1, skipped=1), "skip", id="none_skipped_tr_failure"
    ),
    pytest.param("none_skipped", states(running=1), "wait", id="none_skipped_tr_failure_empty"),
    # test_UpstreamTIStates: op5 (one_failed) after op2 failed, op3 and op4 succeeded
    pytest.param("one_failed", states(success=2, failed=1), "run", id="UpstreamTIStates_op5"),
]

# Not in Airflow's table but Airflow's rules all the same: a rule decides without waiting for
# the rest once it can, and waits while it cannot.
EARLY_CASES = [
    pytest.param("one_success", states(success=1, running=1), "run", id="one_success_first"),
    pytest.param("one_success", states(failed=1, running=1), "wait", id="one_success_waits"),
    pytest.param("one_failed", states(failed=1, running=1), "run", id="one_failed_first"),
    pytest.param(
        "one_failed", states(upstream_failed=1, running=1), "run", id="one_failed_upstream"
    ),
    pytest.param("one_failed", states(success=1, running=1), "wait", id="one_failed_waits"),
    pytest.param(
        "all_success", states(failed=1, running=1), "upstream_failed", id="all_success_early"
    ),
    pytest.param("all_success", states(skipped=1, running=1), "skip", id="all_success_skip"),
    pytest.param("all_failed", states(success=1, running=1), "skip", id="all_failed_early"),
    pytest.param("all_failed", states(failed=1, running=1), "wait", id="all_failed_waits"),
    pytest.param(
        "all_failed", states(failed=1, upstream_failed=1), "run", id="all_failed_upstream"
    ),
    pytest.param(
        "none_failed", states(upstream_failed=1, running=1), "upstream_failed", id="nf_early"
    ),
    pytest.param("none_failed", states(skipped=2), "run", id="none_failed_all_skipped"),
    pytest.param(
        "none_failed_min_one_success",
        states(success=1, running=1),
        "wait",
        id="nfmos_waits",
    ),
    pytest.param("none_skipped", states(skipped=1, running=1), "skip", id="ns_early"),
    pytest.param("none_skipped", states(upstream_failed=1), "run", id="ns_upstream_failed"),
    pytest.param("all_done", states(failed=1, upstream_failed=1), "run", id="all_done_failed"),
    pytest.param("always", states(failed=2), "run", id="always_after_failures"),
]


@pytest.mark.parametrize(("rule", "deps", "expected"), AIRFLOW_CASES + EARLY_CASES)
def test_verdict(rule: str, deps: list[str], expected: str) -> None:
    assert rules.verdict(rule, deps) == expected
    # the order the dependencies are listed in never matters
    assert rules.verdict(rule, list(reversed(deps))) == expected


def test_a_dependency_state() -> None:
    skipped = StepState("a", status="skipped", reason={"kind": "condition"})
    upstream = StepState(
        "a", status="skipped", reason={"kind": "trigger_rule", "upstream_failed": True}
    )
    assert rules.dependency_state(skipped) == "skipped"
    assert rules.dependency_state(upstream) == "upstream_failed"
    assert rules.dependency_state(StepState("a", status="cancelled")) == "failed"
    assert rules.dependency_state(StepState("a", status="waiting")) == "waiting"
    assert rules.dependency_state(None) == "pending"


# -- through the interpreter ---------------------------------------------------------------


def test_a_failure_two_hops_up_keeps_the_default_rule_from_running() -> None:
    """issue 17: ``extract_a`` fails (onError: continue), ``transform_a`` is skipped: for
    ``load`` it is upstream_failed, so ``load`` (default rule) is skipped too, as in Airflow."""
    wf = (
        workflow("etl")
        .task("extract_a", "noop", on_error="continue")
        .task("extract_b", "noop")
        .task("transform_a", "noop", depends_on=["extract_a"])
        .task("transform_b", "noop", depends_on=["extract_b"])
        .task("load", "noop", depends_on=["transform_a", "transform_b"])
        .task("report", "noop", depends_on=["load"], trigger="all_done")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("extract_a", "source down")
    assert d.step("transform_a").status == "skipped"
    assert d.step("transform_a").reason == {
        "kind": "trigger_rule",
        "rule": "none_failed_min_one_success",
        "dependencies": {"extract_a": "failed"},
        "upstream_failed": True,
    }
    # decided at once: transform_b has not even started
    assert d.step("load").status == "skipped"
    assert d.step("load").reason == {
        "kind": "trigger_rule",
        "rule": "none_failed_min_one_success",
        "dependencies": {"transform_a": "upstream_failed", "transform_b": "pending"},
        "upstream_failed": True,
    }
    # all_done runs after an upstream_failed dependency
    assert sorted(d.runnable) == ["extract_b", "report"]
    d.ok("report", 3)
    d.ok("extract_b", 1)
    d.ok("transform_b", 2)
    assert d.status == "completed"
    assert d.statuses() == {
        "extract_a": "failed",
        "extract_b": "completed",
        "transform_a": "skipped",
        "transform_b": "completed",
        "load": "skipped",
        "report": "completed",
    }


def test_one_success_runs_on_the_first_success() -> None:
    wf = (
        workflow("first")
        .task("fast", "noop")
        .wait("slow", duration="1h")
        .task("either", "noop", depends_on=["fast", "slow"], trigger="one_success")
        .build()
    )
    d = Driver(wf, {"x": 1})
    d.start()
    d.ok("fast", "F")
    assert d.step("slow").status == "waiting"
    assert d.runnable == ["either"]
    assert d.step("either").input == "F"  # the dependency that succeeded
    d.ok("either", "E")
    assert d.status != "completed"  # the scope still waits for slow
    d.tick(after=timedelta(hours=1))
    assert d.status == "completed"
    assert d.step("either").status == "completed"


def test_always_runs_at_once_and_one_failed_on_the_first_failure() -> None:
    wf = (
        workflow("at-once")
        .task("a", "noop", on_error="continue")
        .task("b", "noop")
        .task("watch", "noop", depends_on=["a", "b"], trigger="always")
        .task("alarm", "noop", depends_on=["a", "b"], trigger="one_failed")
        .task("all_bad", "noop", depends_on=["a", "b"], trigger="all_failed")
        .build()
    )
    d = Driver(wf, {"in": 1})
    d.start()
    assert sorted(d.runnable) == ["a", "b", "watch"]
    assert d.step("watch").input == {"in": 1}  # nothing done yet: the scope's input
    d.fail("a", "broken")
    assert sorted(d.runnable) == ["alarm", "b", "watch"]
    d.ok("b", 2)
    assert d.step("all_bad").status == "skipped"
    assert d.step("all_bad").reason is not None
    assert d.step("all_bad").reason["upstream_failed"] is False  # skipped, nothing failed here
    d.ok("watch", 0)
    d.ok("alarm", 1)
    assert d.status == "completed"


@pytest.mark.parametrize(
    ("rule", "runs"),
    [
        ("none_failed", True),  # skipped dependencies are fine
        ("none_skipped", False),
        ("none_failed_min_one_success", False),  # needs one success
        ("all_done", True),
    ],
)
def test_rules_after_skipped_dependencies(rule: str, runs: bool) -> None:
    wf = (
        workflow("skips")
        .task("a", "noop", condition="input.go")
        .task("b", "noop", condition="input.go")
        .task("c", "noop", depends_on=["a", "b"], trigger=rule)
        .build()
    )
    d = Driver(wf, {"go": False})
    d.start()
    c = d.step("c")
    if runs:
        assert d.runnable == ["c"]
    else:
        assert c.status == "skipped"
        reason: dict[str, Any] = c.reason or {}
        assert reason["kind"] == "trigger_rule" and reason["upstream_failed"] is False
        assert reason["dependencies"] == {"a": "skipped", "b": "skipped"}


def test_rules_in_a_dag_inside_a_parallel_branch() -> None:
    """Dependencies are looked up, and ``prev`` handed on, under the branch's own prefix."""
    dag = (
        branch("d")
        .task("a", "noop", on_error="continue")
        .task("b", "noop")
        .task("after_a", "noop", depends_on=["a"])
        .task("either", "noop", depends_on=["b", "after_a"], trigger="one_success")
        .task("strict", "noop", depends_on=["after_a", "b"])
        .build()
    )
    wf = workflow("par-dag").parallel("p", branches=[dag]).build()
    d = Driver(wf, {})
    d.start()
    d.ok("p/d/b", "B")
    assert d.step("p/d/either").input == "B"  # ran on the first success, with its output
    d.fail("p/d/a", "broken")
    assert d.step("p/d/after_a").status == "skipped"
    strict = d.step("p/d/strict")
    assert strict.status == "skipped"
    assert strict.reason is not None and strict.reason["upstream_failed"] is True
    assert strict.reason["dependencies"] == {"after_a": "upstream_failed", "b": "completed"}
    d.ok("p/d/either", "E")
    assert d.status == "completed"
