"""The pure interpreter: DAG scopes (dependsOn, conditions, trigger rules, error branches) and
parallel steps (joins, step paths, visible names, race, fail-fast, wait-all, concurrency)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from statemachine import branch, load_yaml, workflow
from statemachine.runtime import flowview
from tests.unit.driver import Driver, at

# -- DAG scopes ------------------------------------------------------------------------------


def test_dag_roots_start_together_and_a_join_waits_for_all() -> None:
    wf = (
        workflow("dag")
        .task("a", "noop")
        .task("b", "noop")
        .task("c", "noop", depends_on=["a", "b"])
        .build()
    )
    d = Driver(wf, {"in": 1})
    d.start()
    assert d.runnable == ["a", "b"]
    assert d.step("a").input == {"in": 1} and d.step("b").input == {"in": 1}
    d.ok("b", "B")
    assert d.runnable == ["a"]
    assert "c" not in d.state.steps
    d.ok("a", "A")
    assert d.runnable == ["c"]
    assert d.step("c").input == "B"  # prev is the last dependency listed
    d.ok("c", "C")
    assert d.status == "completed"
    assert d.state.output == {"c": "C"}  # a DAG's output: its leaves by name
    assert d.types().count("workflow.completed") == 1


def test_yaml_dag_example_runs_the_low_risk_path() -> None:
    wf = load_yaml(
        """
id: order-processing
version: 1
steps:
  - id: validate
    action: validatePayment
    params:
      order: ${{ input.orderId }}
  - id: score
    action: calculateFraudScore
    dependsOn: [validate]
  - id: charge
    action: chargeCard
    dependsOn: [score]
    condition: score.risk < 0.3
    maxRetries: 3
    retryDelay: 1m
    onError: branch
    errorBranch: notify-admin
  - id: review
    action: queueForReview
    dependsOn: [score]
    condition: score.risk >= 0.3
  - id: follow-up
    action: sendSurvey
    delay: 3d
    dependsOn: [charge, review]
  - id: notify-admin
    action: alertAdmin
"""
    )
    d = Driver(wf, {"orderId": "o-1"})
    d.start()
    assert d.runnable == ["validate"]
    assert d.step("validate").input == {"order": "o-1"}
    d.ok("validate", {"ok": True})
    d.ok("score", {"risk": 0.1})
    assert d.runnable == ["charge"]
    skipped = d.items("workflow.step.skipped", "review")[0].data
    assert skipped == {
        "reason": "condition",
        "condition": "score.risk >= 0.3",
        "values": {"score": {"risk": 0.1}},
    }
    for i in range(3):
        d.fail("charge", f"declined {i}")
        d.tick(after=60 * 2**i)
    d.ok("charge", "charged")
    assert d.step("charge").attempts == 4
    assert d.step("follow-up").status == "waiting"
    assert d.wake == d.now + (at(days=3) - at())
    d.tick(after=3 * 86400)
    d.ok("follow-up", "sent")
    assert d.status == "completed"
    assert "notify-admin" not in d.state.steps
    assert d.state.output == {"follow-up": "sent"}


def test_condition_false_skips_with_reason_expression_and_values() -> None:
    wf = (
        workflow("cond")
        .task("score", "noop")
        .task("charge", "noop", depends_on=["score"], condition="score.risk < 0.3")
        .task("review", "noop", depends_on=["score"], condition="score.risk >= 0.3")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("score", {"risk": 0.5})
    assert d.runnable == ["review"]
    assert d.step("charge").status == "skipped"
    item = d.items("workflow.step.skipped", "charge")[0]
    assert item.data == {
        "reason": "condition",
        "condition": "score.risk < 0.3",
        "values": {"score": {"risk": 0.5}},
    }
    assert d.items("workflow.step.started", "charge") == []
    d.ok("review", "R")
    assert d.status == "completed"
    assert d.state.output == {"review": "R"}


def test_a_root_condition_is_checked_too() -> None:
    wf = (
        workflow("root-cond")
        .task("a", "noop", condition="input.k == 2")
        .task("b", "noop")
        .task("c", "noop", depends_on=["a"], trigger="all_done")
        .build()
    )
    d = Driver(wf, {"k": 1})
    d.start()
    assert d.runnable == ["b", "c"]
    assert d.step("a").status == "skipped"
    assert d.items("workflow.step.skipped", "a")[0].data["values"] == {"input": {"k": 1}}


def test_a_callable_condition_in_a_dag() -> None:
    wf = (
        workflow("callable-cond")
        .task("a", "noop")
        .task("b", "noop", depends_on=["a"], condition=lambda ctx: ctx.steps["a"] > 1)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", 1)
    assert d.step("b").status == "skipped"
    data = d.items("workflow.step.skipped", "b")[0].data
    assert data["reason"] == "condition" and data["values"] == {}
    assert "lambda" in data["condition"]
    assert d.status == "completed"
    assert d.state.output == {}


def test_a_condition_in_a_sequential_scope_skips_and_passes_prev_on() -> None:
    wf = (
        workflow("seq-cond")
        .task("a", "noop")
        .task("b", "noop", condition="prev.big")
        .task("c", "noop")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"big": False})
    assert d.step("b").status == "skipped"
    assert d.runnable == ["c"]
    assert d.step("c").input == {"big": False}


# trigger rules: (dependencies' outcomes) -> whether the dependent runs, per rule
RULES = [
    "all_success",
    "all_done",
    "one_success",
    "none_failed_min_one_success",
    "always",
    "all_failed",
    "one_failed",
    "none_failed",
    "none_skipped",
]
CASES: dict[tuple[str, ...], list[bool]] = {
    ("ok",): [True, True, True, True, True, False, False, True, True],
    ("ok", "failed"): [False, True, True, False, True, False, True, False, True],
    ("ok", "skipped"): [False, True, True, True, True, False, False, True, False],
    ("failed",): [False, True, False, False, True, True, True, False, True],
    ("skipped",): [False, True, False, False, True, False, False, True, False],
    ("failed", "skipped"): [False, True, False, False, True, False, True, False, False],
}


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _rule_workflow(rule: str, deps: tuple[str, ...]) -> Any:
    return (
        workflow("rules")
        .task("ok", "noop")
        .task("failed", "noop", on_error="continue")
        .task("skipped", "noop", condition="input.never")
        .task("target", "noop", depends_on=list(deps), trigger=rule)
        .build()
    )


@pytest.mark.parametrize("deps", list(CASES))
@pytest.mark.parametrize("rule", RULES)
def test_trigger_rules(rule: str, deps: tuple[str, ...]) -> None:
    expected = CASES[deps][RULES.index(rule)]
    d = Driver(_rule_workflow(rule, deps), {"never": False})
    d.start()
    assert {"failed", "ok"} <= set(d.runnable)
    assert d.step("skipped").status == "skipped"
    d.ok("ok", "O")
    d.fail("failed", "handled")
    assert d.step("failed").status == "failed"
    if expected:
        assert d.runnable == ["target"]
        d.ok("target", "T")
        assert d.state.output["target"] == "T"
    else:
        assert d.step("target").status == "skipped"
        data = d.items("workflow.step.skipped", "target")[0].data
        assert data["reason"] == "trigger_rule"
        assert data["rule"] == rule
        # decided as soon as the rule could no longer be met: a dependency may still run
        status = {"ok": ("completed", "running"), "failed": ("failed", "running")}
        status["skipped"] = ("skipped",)
        assert set(data["dependencies"]) == set(deps)
        assert all(data["dependencies"][dep] in status[dep] for dep in deps)
        assert d.step("target").reason == {"kind": "trigger_rule", **without(data, "reason")}
    assert d.status == "completed"  # a failure taken by on_error does not fail the DAG


def test_the_default_trigger_rule_is_none_failed_min_one_success() -> None:
    wf = workflow("default").task("a", "noop").task("b", "noop", depends_on=["a"]).build()
    assert wf.steps[1].trigger == "none_failed_min_one_success"


def test_a_skip_cascades_through_the_rules() -> None:
    wf = (
        workflow("cascade")
        .task("a", "noop", condition="input.run_a")
        .task("b", "noop", depends_on=["a"])
        .task("c", "noop", depends_on=["b"], trigger="all_success")
        .task("cleanup", "noop", depends_on=["c"], trigger="all_done")
        .task("d", "noop", depends_on=["c"], trigger="always")
        .build()
    )
    d = Driver(wf, {"run_a": False})
    d.start()
    assert d.statuses() == {
        "a": "skipped",
        "b": "skipped",
        "c": "skipped",
        "cleanup": "running",
        "d": "running",
    }
    b = d.items("workflow.step.skipped", "b")[0].data
    assert b == {
        "reason": "trigger_rule",
        "rule": "none_failed_min_one_success",
        "dependencies": {"a": "skipped"},
        "upstream_failed": False,  # nothing failed: a plain skip for its dependents
    }
    assert d.step("cleanup").input is None  # a skipped dependency passes nothing on
    d.ok("cleanup", 1)
    d.ok("d", 2)
    assert d.status == "completed"
    assert d.state.output == {"cleanup": 1, "d": 2}
    assert d.types().count("workflow.completed") == 1


def test_every_step_skipped_completes_once() -> None:
    wf = (
        workflow("all-skipped")
        .task("a", "noop")
        .task("b", "noop", depends_on=["a"], condition="a.x == 1")
        .task("c", "noop", depends_on=["a"], condition="a.x == 1")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {"x": 2})
    assert d.status == "completed"
    assert d.types().count("workflow.completed") == 1
    assert d.state.output == {}


def test_an_unhandled_failure_in_a_dag_cancels_the_rest() -> None:
    wf = (
        workflow("dag-fail")
        .task("a", "noop")
        .task("b", "noop")
        .task("c", "noop", depends_on=["a", "b"])
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("a", "bad")
    assert d.status == "failed"
    assert d.step("b").status == "cancelled"
    assert "c" not in d.state.steps
    assert d.ok("b", 1).history == []


def test_error_branch_in_a_dag_runs_only_on_error() -> None:
    def build() -> Any:
        return (
            workflow("err-branch")
            .task("charge", "noop", on_error="branch", error_next="notify-admin")
            .task("ship", "noop", depends_on=["charge"])
            .task("notify-admin", "noop")
            .build()
        )

    ok = Driver(build(), {})
    ok.start()
    assert ok.runnable == ["charge"]  # the error branch is not a root
    ok.ok("charge", "paid")
    ok.ok("ship", "shipped")
    assert ok.status == "completed"
    assert "notify-admin" not in ok.state.steps
    assert ok.state.output == {"ship": "shipped"}

    bad = Driver(build(), {})
    bad.start()
    bad.fail("charge", "declined")
    assert bad.runnable == ["notify-admin"]
    assert bad.step("notify-admin").input["error"]["message"] == "declined"
    assert bad.step("charge").handled
    assert bad.step("ship").status == "skipped"
    bad.ok("notify-admin", "alerted")
    assert bad.status == "completed"  # the failed step counts as handled
    assert bad.state.output == {"notify-admin": "alerted"}


def test_a_step_after_an_unused_error_branch_is_skipped() -> None:
    wf = (
        workflow("after-handler")
        .task("charge", "noop", on_error="branch", error_next="alert")
        .task("alert", "noop")
        .task("audit", "noop", depends_on=["alert"])
        .task("always-audit", "noop", depends_on=["alert"], trigger="always")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("charge", 1)
    assert d.step("alert").status == "skipped"
    assert d.items("workflow.step.skipped", "alert")[0].data == {"reason": "error_branch_not_taken"}
    assert d.step("audit").status == "skipped"
    assert d.runnable == ["always-audit"]
    d.ok("always-audit", 2)
    assert d.status == "completed"


def test_a_failing_condition_fails_its_step() -> None:
    wf = (
        workflow("bad-cond")
        .task("a", "noop")
        .task("b", "noop", depends_on=["a"], condition="a.missing > 1")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("a", {})
    assert d.step("b").status == "failed"
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "ExpressionError"
    assert d.state.error["step"] == "b"


# -- parallel --------------------------------------------------------------------------------


def _order_workflow(**parallel: Any) -> Any:
    return (
        workflow("order")
        .task("validate", "noop")
        .parallel(
            "fulfill",
            branches=[
                branch("shipping").task("ship", "noop").task("track", "noop").build(),
                branch("notification")
                .task(
                    "notify",
                    "noop",
                    input=lambda prev, wf_input: {"order_id": wf_input["order_id"]},
                )
                .build(),
            ],
            next="complete",
            **parallel,
        )
        .pass_("complete", transform=lambda ctx: {"done": True, "f": ctx.prev}, end=True)
        .build()
    )


def test_parallel_all_joins_the_last_output_of_each_branch() -> None:
    d = Driver(_order_workflow(), {"order_id": "o-1"})
    d.start()
    d.ok("validate", {"valid": True})
    assert d.runnable == ["fulfill/notification/notify", "fulfill/shipping/ship"]
    assert d.step("fulfill").status == "running"
    assert d.step("fulfill/shipping/ship").input == {"valid": True}
    assert d.step("fulfill/notification/notify").input == {"order_id": "o-1"}
    d.ok("fulfill/shipping/ship", "shipped")
    assert d.step("fulfill/shipping/track").input == "shipped"
    d.ok("fulfill/notification/notify", "notified")
    assert d.step("fulfill").status == "running"
    d.ok("fulfill/shipping/track", "tracked")
    assert d.step("fulfill").status == "completed"
    expected = {"shipping": "tracked", "notification": "notified"}
    assert d.step("fulfill").output == expected
    assert d.status == "completed"
    assert d.state.output == {"done": True, "f": expected}
    # progress only counts top-level steps
    assert {h.step for h in d.items("workflow.progress")} <= {"validate", "fulfill", "complete"}


def test_a_parallel_as_first_step_gets_the_workflow_input() -> None:
    wf = (
        workflow("first")
        .parallel(
            "p",
            branches=[branch("x").task("a", "noop").build(), branch("y").pass_("b").build()],
        )
        .build()
    )
    d = Driver(wf, {"in": 1})
    d.start()
    assert d.step("p/x/a").input == {"in": 1}
    assert d.step("p/y/b").output == {"in": 1}
    d.ok("p/x/a", "A")
    assert d.state.output == {"x": "A", "y": {"in": 1}}


def test_visible_steps_prefer_the_branch_s_own_names() -> None:
    wf = (
        workflow("names")
        .task("prepare", "noop")
        .parallel(
            "p",
            branches=[
                branch("b1").task("prepare", "noop").task("use", "noop").build(),
                branch("b2").task("other", "noop").build(),
            ],
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("prepare", "top")
    d.ok("p/b1/prepare", "local")
    state, plan = d.state, d.plan
    assert flowview.visible_steps(plan, state, "p/b1/use")["prepare"] == "local"
    assert flowview.visible_steps(plan, state, "p/b2/other")["prepare"] == "top"
    assert "use" not in flowview.visible_steps(plan, state, "p/b2/other")
    view = flowview.view(plan, state, "p/b1/use", "p/b1/prepare", "i")
    assert view.prev == "local" and view.steps["prepare"] == "local"


def test_race_takes_the_first_branch_and_cancels_the_others() -> None:
    wf = (
        workflow("race")
        .parallel(
            "p",
            branches=[
                branch("fast").task("f", "noop").build(),
                branch("slow").task("s1", "noop").task("s2", "noop").build(),
                branch("sleepy").wait("nap", duration="1h").task("s3", "noop").build(),
            ],
            mode="race",
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("p/slow/s1", "S1")
    assert d.runnable == ["p/fast/f", "p/slow/s2"]
    d.ok("p/fast/f", "F")
    assert d.step("p").output == {"winner": "fast", "value": "F"}
    assert d.status == "completed"
    assert d.step("p/slow/s2").status == "cancelled"
    assert d.step("p/sleepy/nap").status == "cancelled"
    assert d.step("p/slow/s1").status == "completed"
    cancelled = {h.step for h in d.items("workflow.step.cancelled")}
    assert cancelled == {"p/slow/s2", "p/sleepy/nap"}
    late = d.ok("p/slow/s2", "late")
    assert late.history == [] and late.changed == set()
    assert d.step("p").output == {"winner": "fast", "value": "F"}


def _failover(**kw: Any) -> Any:
    return (
        workflow("failover")
        .parallel(
            "p",
            branches=[
                branch("primary").task("call", "noop").build(),
                branch("backup").wait("grace", duration="1m").task("call", "noop").build(),
            ],
            mode="race",
            **kw,
        )
        .build()
    )


def test_a_failing_branch_does_not_end_a_race_the_first_success_wins() -> None:
    d = Driver(_failover(), {})
    d.start()
    d.fail("p/primary/call", "primary down")
    assert d.step("p").status == "running"
    assert d.status == "waiting"  # the backup's timer
    d.tick(after=60)
    d.ok("p/backup/call", "B")
    assert d.status == "completed"
    assert d.step("p").output == {"winner": "backup", "value": "B"}
    assert d.step("p/primary/call").status == "failed"


def test_a_race_fails_only_when_every_branch_failed_with_every_error() -> None:
    d = Driver(_failover(), {})
    d.start()
    d.tick(after=60)
    d.fail("p/backup/call", "backup down")
    assert d.step("p").status == "running"
    d.fail("p/primary/call", "primary down")
    assert d.status == "failed"
    error = d.state.error
    assert error is not None
    assert error["type"] == "RaceError"
    assert [e["message"] for e in error["errors"]] == ["primary down", "backup down"]
    assert "primary: primary down" in error["message"]
    assert "backup: backup down" in error["message"]


def test_a_race_of_one_branch_at_a_time_starts_the_backup_when_the_primary_fails() -> None:
    d = Driver(_failover(max_concurrency=1), {})
    d.start()
    assert d.runnable == ["p/primary/call"]
    assert "p/backup/grace" not in d.state.steps
    d.fail("p/primary/call", "primary down")
    assert d.step("p/backup/grace").status == "waiting"
    d.tick(after=60)
    d.ok("p/backup/call", "B")
    assert d.step("p").output == {"winner": "backup", "value": "B"}


def test_retry_of_a_lost_race_runs_every_branch_again() -> None:
    d = Driver(_failover(), {})
    d.start()
    d.fail("p/primary/call", "primary down")
    d.tick(after=60)
    d.fail("p/backup/call", "backup down")
    assert d.status == "failed"
    d.retry()
    assert d.runnable == ["p/backup/call", "p/primary/call"]
    d.ok("p/primary/call", "P")
    assert d.status == "completed"
    assert d.step("p").output == {"winner": "primary", "value": "P"}


def test_a_race_won_while_a_sibling_is_about_to_start_does_not_start_it() -> None:
    wf = (
        workflow("race2")
        .parallel(
            "p",
            branches=[
                branch("a").wait("wa", duration="1h").task("a2", "noop").build(),
                branch("b").wait("wb", duration="1h").build(),
            ],
            mode="race",
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.tick(at(hours=1))  # both timers fire in one tick: "a" queues a2, "b" wins
    assert d.status == "completed"
    assert d.runnable == []


def test_fail_fast_cancels_the_other_branches() -> None:
    d = Driver(_order_workflow(), {"order_id": "o"})
    d.start()
    d.ok("validate", 1)
    d.fail("fulfill/notification/notify", "smtp down")
    assert d.step("fulfill/shipping/ship").status == "cancelled"
    assert d.step("fulfill").status == "failed"
    assert d.status == "failed"
    error = d.state.error
    assert error is not None
    assert error["type"] == "BranchFailed"
    assert "notification" in error["message"] and "smtp down" in error["message"]
    assert [e["message"] for e in error["errors"]] == ["smtp down"]
    assert d.ok("fulfill/shipping/ship", 1).history == []


def test_wait_all_lets_the_others_finish_then_fails_with_every_error() -> None:
    wf = (
        workflow("wait-all")
        .parallel(
            "p",
            branches=[
                branch("a").task("a1", "noop").build(),
                branch("b").task("b1", "noop").task("b2", "noop").build(),
                branch("c").task("c1", "noop").build(),
            ],
            failure="wait-all",
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("p/a/a1", "a broke")
    assert d.step("p").status == "running"
    assert d.runnable == ["p/b/b1", "p/c/c1"]
    d.ok("p/b/b1", 1)
    d.fail("p/c/c1", "c broke")
    assert d.runnable == ["p/b/b2"]
    d.ok("p/b/b2", 2)
    assert d.step("p").status == "failed"
    assert d.status == "failed"
    error = d.state.error
    assert error is not None
    assert sorted(e["message"] for e in error["errors"]) == ["a broke", "c broke"]
    assert {e["step"] for e in error["errors"]} == {"p/a/a1", "p/c/c1"}


def test_a_failed_dag_branch_stops_its_own_steps_under_wait_all() -> None:
    wf = (
        workflow("dag-branch")
        .parallel(
            "p",
            branches=[
                branch("d")
                .task("x", "noop")
                .task("y", "noop")
                .task("w", "noop", depends_on=["x", "y"])
                .build(),
                branch("e").task("z", "noop").build(),
            ],
            failure="wait-all",
        )
        .task("after", "noop")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    assert d.runnable == ["p/d/x", "p/d/y", "p/e/z"]
    d.fail("p/d/x", "x broke")
    assert d.step("p/d/y").status == "cancelled"
    d.ok("p/e/z", 1)
    assert d.status == "failed"
    assert d.state.branches["p"]["d"]["status"] == "failed"


def test_parallel_failure_taken_by_on_error_continue() -> None:
    wf = (
        workflow("p-cont")
        .parallel(
            "p",
            branches=[
                branch("a").task("a1", "noop").build(),
                branch("b").task("b1", "noop").build(),
            ],
            on_error="continue",
        )
        .task("after", "noop")
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.fail("p/a/a1", "bad")
    assert d.step("p").status == "failed" and d.step("p").handled
    assert d.runnable == ["after"]
    assert d.step("after").input["error"]["type"] == "BranchFailed"


def test_max_concurrency_starts_branches_as_others_finish() -> None:
    wf = (
        workflow("limited")
        .parallel(
            "p",
            branches=[branch(n).task("t", "noop").build() for n in ("a", "b", "c")],
            max_concurrency=2,
        )
        .build()
    )
    d = Driver(wf, {})
    d.start()
    assert d.runnable == ["p/a/t", "p/b/t"]
    d.ok("p/b/t", "B")
    assert d.runnable == ["p/a/t", "p/c/t"]
    d.ok("p/a/t", "A")
    d.ok("p/c/t", "C")
    assert d.state.output == {"a": "A", "b": "B", "c": "C"}


def test_nested_parallel_paths_and_outputs() -> None:
    inner = branch("inner").task("deep", "noop").build()
    wf = (
        workflow("nested")
        .parallel(
            "outer",
            branches=[
                branch("left")
                .parallel("mid", branches=[inner, branch("other").pass_("echo").build()])
                .build(),
                branch("right").task("r", "noop").build(),
            ],
        )
        .build()
    )
    d = Driver(wf, {"v": 1})
    d.start()
    assert d.runnable == ["outer/left/mid/inner/deep", "outer/right/r"]
    assert d.step("outer/left/mid/other/echo").output == {"v": 1}
    d.ok("outer/left/mid/inner/deep", "D")
    d.ok("outer/right/r", "R")
    assert d.state.output == {"left": {"inner": "D", "other": {"v": 1}}, "right": "R"}


def test_a_loop_around_a_parallel_with_a_dag_branch_restarts_it() -> None:
    wf = (
        workflow("loop-par")
        .parallel(
            "p",
            branches=[branch("d").task("x", "noop").task("y", "noop", depends_on=["x"]).build()],
        )
        .loop("again", condition="prev.d.y.again", target="p", max_iterations=3)
        .build()
    )
    d = Driver(wf, {})
    d.start()
    d.ok("p/d/x", 1)
    d.ok("p/d/y", {"again": True})
    assert d.runnable == ["p/d/x"]
    assert d.step("p/d/y").status == "pending"
    assert d.step("p/d/x").iteration == 1
    d.ok("p/d/x", 2)
    assert d.runnable == ["p/d/y"]
    assert d.step("p/d/y").iteration == 1
    d.ok("p/d/y", {"again": False})
    assert d.status == "completed"
    assert d.state.output == {"d": {"y": {"again": False}}}


# -- map -------------------------------------------------------------------------------------


def _map_workflow(items: Any = "load.items") -> Any:
    iterator = (
        branch("it")
        .task("charge", "noop")
        .pass_("shape", transform=lambda ctx: {"charged": ctx.prev, "seen": ctx.steps["charge"]})
        .build()
    )
    return (
        workflow("map")
        .task("load", "noop")
        .map("each", items=items, iterator=iterator)
        .task("after", "noop")
        .build()
    )


def test_map_runs_every_item_at_once_and_keeps_the_order() -> None:
    d = Driver(_map_workflow(), {})
    d.start()
    d.ok("load", {"items": [10, 20, 30]})
    assert d.step("each").status == "running"
    charges = [f"each/it@{i}/charge" for i in range(3)]
    assert d.runnable == charges  # items run concurrently, each under its own path
    assert [d.step(p).input for p in charges] == [10, 20, 30]
    for path, item in reversed(list(zip(charges, (10, 20, 30), strict=True))):
        d.ok(path, f"c{item}")  # finishing out of order ...
    expected = [{"charged": f"c{n}", "seen": f"c{n}"} for n in (10, 20, 30)]
    assert d.step("each").output == expected  # ... still gives the results in item order
    assert d.step("after").input == expected


def test_map_max_concurrency_bounds_the_items_in_flight() -> None:
    iterator = branch("it").task("charge", "noop").build()
    wf = (
        workflow("bounded").map("each", items="input", iterator=iterator, max_concurrency=2).build()
    )
    d = Driver(wf, ["a", "b", "c", "d"])
    d.start()
    assert d.runnable == ["each/it@0/charge", "each/it@1/charge"]
    d.ok("each/it@1/charge", "B")
    assert d.runnable == ["each/it@0/charge", "each/it@2/charge"]
    d.ok("each/it@0/charge", "A")
    d.ok("each/it@2/charge", "C")
    assert d.runnable == ["each/it@3/charge"]
    d.ok("each/it@3/charge", "D")
    assert d.state.output == ["A", "B", "C", "D"]


def test_a_finished_item_leaves_the_state_column_for_a_record_of_its_own() -> None:
    """The state column is rewritten on every commit of a map: a finished item leaves it
    (status, index, a copy of the item and its result) for a step row of its own, written
    once, so the column does not grow with the items done."""
    iterator = branch("it").task("charge", "noop").build()
    wf = workflow("lean").map("each", items="input", iterator=iterator, max_concurrency=2).build()
    d = Driver(wf, [{"sku": "x" * 40, "n": i} for i in range(40)])
    d.start()
    d.ok("each/it@0/charge", {"paid": 0})
    records = d.state.frontier_json()["branches"]["each"]
    assert set(records) == {"#map", "it@1", "it@2"}  # the two in flight, and the map's own
    assert records["#map"] == {"next": 3}
    assert d.step("each/it@0/").output == {"paid": 0}
    assert (
        d.last is not None and "each/it@0/" in d.last.changed
    )  # written with the commit that finished the item
    sizes = {}
    for i in range(1, 39):
        d.ok(f"each/it@{i}/charge", {"paid": i})
        sizes[i] = len(json.dumps(d.state.frontier_json()))
    assert sizes[37] == sizes[10]  # 27 more items done; the same two-digit items in flight
    d.ok("each/it@39/charge", {"paid": 39})
    assert d.state.output == [{"paid": i} for i in range(40)]
    assert set(d.state.frontier_json()["branches"]["each"]) == {"#map"}


def test_a_map_stored_with_results_in_its_state_column_still_finishes_with_them() -> None:
    """A state stored before item results had rows of their own (``#map.results``) is read
    back as it was: results found there count, new ones get their rows."""
    iterator = branch("it").task("charge", "noop").build()
    wf = workflow("old").map("each", items="input", iterator=iterator, max_concurrency=1).build()
    d = Driver(wf, ["a", "b", "c"])
    d.start()
    d.ok("each/it@0/charge", "A")
    d.ok("each/it@1/charge", "B")
    # as the previous release stored it: results in the column, no item records
    d.state.branches["each"]["#map"]["results"] = {"0": "A", "1": "B"}
    for path in ("each/it@0/", "each/it@1/"):
        del d.state.steps[path]
    d.state.unsettled = None
    d.ok("each/it@2/charge", "C")
    assert d.step("each").output == ["A", "B", "C"]


def test_a_map_run_again_by_a_loop_gives_the_results_of_its_new_round() -> None:
    iterator = branch("it").task("charge", "noop").build()
    wf = (
        workflow("again")
        .map("each", items="input", iterator=iterator, max_concurrency=1)
        .loop("more", condition="steps.each[0] == 'first'", target="each", max_iterations=3)
        .build()
    )
    d = Driver(wf, ["a", "b"])
    d.start()
    d.ok("each/it@0/charge", "first")
    d.ok("each/it@1/charge", "x")
    assert d.step("each").iteration == 1  # the loop entered the map again
    assert d.runnable == ["each/it@0/charge"]
    d.ok("each/it@0/charge", "second")
    assert d.runnable == ["each/it@1/charge"]
    d.ok("each/it@1/charge", "y")
    assert d.step("each").output == ["second", "y"]
    assert d.status == "completed"


def test_map_over_no_items_gives_an_empty_list() -> None:
    d = Driver(_map_workflow(items=lambda ctx: ctx.input["xs"]), {"xs": []})
    d.start()
    d.ok("load", None)
    assert d.step("each").output == []
    assert d.runnable == ["after"]


def test_map_items_that_are_not_a_list_fail_the_step() -> None:
    d = Driver(_map_workflow(), {})
    d.start()
    d.ok("load", {"items": "abc"})
    assert d.status == "failed"
    assert d.state.error is not None
    assert d.state.error["type"] == "ExpressionError"
    assert "expected a list" in d.state.error["message"]


def test_a_failing_item_fails_the_map_and_a_retry_resumes_at_that_item() -> None:
    iterator = branch("it").task("charge", "noop").build()
    wf = (
        workflow("map-retry")
        .map("each", items="input", iterator=iterator, max_concurrency=1)
        .build()
    )
    d = Driver(wf, ["a", "b", "c"])
    d.start()
    d.ok("each/it@0/charge", "A")
    d.fail("each/it@1/charge", "card declined")
    assert d.step("each").status == "failed"
    assert d.status == "failed"
    error = d.state.error
    assert error is not None
    assert error["type"] == "ItemFailed" and error["index"] == 1
    assert "card declined" in error["message"]
    d.retry()
    assert d.runnable == ["each/it@1/charge"]
    assert d.step("each/it@1/charge").input == "b"
    d.ok("each/it@1/charge", "B")
    d.ok("each/it@2/charge", "C")
    assert d.step("each").output == ["A", "B", "C"]
    assert d.status == "completed"


def test_a_failing_item_cancels_the_items_in_flight() -> None:
    iterator = branch("it").task("charge", "noop").build()
    wf = workflow("map-fail").map("each", items="input", iterator=iterator).build()
    d = Driver(wf, ["a", "b"])
    d.start()
    d.fail("each/it@0/charge", "declined")
    assert d.step("each/it@1/charge").status == "cancelled"
    assert d.status == "failed"


def test_map_with_a_dag_iterator() -> None:
    iterator = (
        branch("it")
        .task("x", "noop")
        .task("y", "noop", depends_on=["x"], condition="x > 1")
        .build()
    )
    wf = workflow("map-dag").map("m", items="input", iterator=iterator).build()
    d = Driver(wf, [1, 2])
    d.start()
    assert d.step("m/it@0/x").input == 1 and d.step("m/it@1/x").input == 2
    d.ok("m/it@0/x", 1)  # y skipped for the first item
    d.ok("m/it@1/x", 2)
    d.ok("m/it@1/y", "Y")
    assert d.state.output == [{}, {"y": "Y"}]


def test_map_iterator_expressions_see_item_and_index() -> None:
    wf = (
        workflow("map-names")
        .map(
            "each",
            items="input.xs",
            iterator=branch("it")
            .task("send", "noop", input={"to": "${{ item }}", "n": "${{ index }}"})
            .build(),
        )
        .build()
    )
    d = Driver(wf, {"xs": ["a@x.io", "b@x.io"]})
    d.start()
    assert d.step("each/it@0/send").input == {"to": "a@x.io", "n": 0}
    assert d.step("each/it@1/send").input == {"to": "b@x.io", "n": 1}
    d.ok("each/it@1/send", "sent-b")
    d.ok("each/it@0/send", "sent-a")
    assert d.step("each").output == ["sent-a", "sent-b"]
