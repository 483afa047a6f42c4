"""validate(): one test per rule, each asserting the code, the YAML location and the message."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine import errors
from statemachine.definition import models, validation
from statemachine.definition.builder import branch, when, workflow


def task(name: str, **fields: Any) -> models.TaskStep:
    return models.TaskStep(name=name, handler="noop", **fields)


def end(name: str) -> models.PassStep:
    return models.PassStep(name=name, end=True)


def define(*steps: models.StepBase, **fields: Any) -> models.WorkflowDefinition:
    return models.WorkflowDefinition(name="wf", steps=steps, **fields)


def found(*steps: models.StepBase, **fields: Any) -> list[errors.Issue]:
    return validation.validate(define(*steps, **fields))


def only(issues: list[errors.Issue], code: str) -> errors.Issue:
    """The one issue with ``code``; fails listing everything when there is not exactly one."""
    matching = [i for i in issues if i.code == code]
    assert len(matching) == 1, issues
    return matching[0]


def codes(issues: list[errors.Issue]) -> list[str]:
    return [i.code for i in issues]


# --- 1. empty scopes ----------------------------------------------------------------------


def test_empty_workflow() -> None:
    issue = only(found(), "empty_scope")
    assert issue.location == "steps"
    assert "workflow has no steps" in issue.message
    assert (issue.line, issue.column) == (0, 0)


def test_empty_branch_and_iterator() -> None:
    par = models.ParallelStep(name="p", branches=(models.Branch(name="a", steps=()),))
    mapped = models.MapStep(name="m", items="input.xs", iterator=models.Branch(name="it", steps=()))
    issues = found(par, mapped)
    assert [(i.code, i.location) for i in issues] == [
        ("empty_scope", "steps[0].branches[0].steps"),
        ("empty_scope", "steps[1].iterator.steps"),
    ]
    assert "branch has no steps" in issues[0].message
    assert "iterator has no steps" in issues[1].message


def test_empty_parallel_and_choice() -> None:
    issues = found(
        models.ParallelStep(name="p", branches=()),
        models.ChoiceStep(name="c", choices=(), default="e"),
        end("e"),
    )
    assert only(issues, "empty_parallel").location == "steps[0].branches"
    assert only(issues, "empty_choice").location == "steps[1].choices"


# --- 2. names -----------------------------------------------------------------------------


def test_duplicate_step_name_reported_at_the_second() -> None:
    issue = only(found(task("a"), task("b"), task("a")), "duplicate_name")
    assert issue.location == "steps[2].id"
    assert "duplicate step name 'a'" in issue.message and "steps[0]" in issue.message


def test_duplicate_branch_name() -> None:
    one = models.Branch(name="x", steps=(task("s"),))
    par = models.ParallelStep(name="p", branches=(one, one))
    issue = only(found(par), "duplicate_name")
    assert issue.location == "steps[0].branches[1].name"
    assert "duplicate branch name 'x'" in issue.message


def test_same_step_name_in_different_scopes_is_fine() -> None:
    par = models.ParallelStep(name="p", branches=(models.Branch(name="b", steps=(task("a"),)),))
    assert found(task("a"), par) == []


@pytest.mark.parametrize(
    "name",
    ["has space", "a/b", "tab\there", "a#compensate", "each@1", "nul\x00", "bell\x07"],
)
def test_bad_step_name(name: str) -> None:
    issue = only(found(task(name)), "bad_name")
    assert issue.location == "steps[0].id"
    assert repr(name) in issue.message


def test_bad_branch_name() -> None:
    par = models.ParallelStep(name="p", branches=(models.Branch(name="x/y", steps=(task("s"),)),))
    assert only(found(par), "bad_name").location == "steps[0].branches[0].name"


# --- 3. references ------------------------------------------------------------------------


def test_unknown_next_with_did_you_mean() -> None:
    issue = only(found(task("charge"), task("x", next="chrage")), "unknown_reference")
    assert issue.location == "steps[1].next"
    assert issue.message == "unknown step 'chrage' in next (did you mean 'charge'?)"


@pytest.mark.parametrize(
    ("step", "location", "key"),
    [
        (
            models.ChoiceStep(
                name="x", choices=(models.ChoiceRule(condition="true", next="chrage"),)
            ),
            "steps[1].choices[0].next",
            "next",
        ),
        (
            models.ChoiceStep(
                name="x",
                choices=(models.ChoiceRule(condition="true", next="charge"),),
                default="chrage",
            ),
            "steps[1].default",
            "default",
        ),
        (
            models.LoopStep(name="x", condition="true", target="chrage", max_iterations=3),
            "steps[1].target",
            "target",
        ),
        (task("x", on_error="branch", error_next="chrage"), "steps[1].errorBranch", "errorBranch"),
    ],
)
def test_unknown_reference_in_every_key(step: models.StepBase, location: str, key: str) -> None:
    issue = only(found(task("charge"), step), "unknown_reference")
    assert issue.location == location
    assert issue.message == f"unknown step 'chrage' in {key} (did you mean 'charge'?)"


def test_unknown_depends_on() -> None:
    issue = only(
        found(task("charge"), task("x", depends_on=("charge", "chrage"))), "unknown_reference"
    )
    assert issue.location == "steps[1].dependsOn[1]"
    assert issue.message == "unknown step 'chrage' in dependsOn (did you mean 'charge'?)"


def test_reference_into_another_scope_is_unknown() -> None:
    inner = models.Branch(name="b", steps=(task("ship", next="notify"),))
    par = models.ParallelStep(name="p", branches=(inner,))
    issue = only(found(par, task("notify")), "unknown_reference")
    assert issue.location == "steps[0].branches[0].steps[0].next"


def test_builder_reports_unknown_reference() -> None:
    with pytest.raises(errors.DefinitionError) as caught:
        workflow("w").task("charge", handler="noop").task(
            "x", handler="noop", next="chrage"
        ).build()
    [issue] = caught.value.errors
    assert issue.location == "steps[1].next"
    assert "did you mean 'charge'?" in issue.message


# --- 4. scope mixing ----------------------------------------------------------------------


def test_scope_mixing_at_every_offending_key() -> None:
    issues = found(
        task("a"),
        task("b", depends_on=("a",), next="c"),
        task("c", depends_on=("a",), end=True),
        models.ChoiceStep(name="d", choices=(models.ChoiceRule(condition="true", next="a"),)),
        models.LoopStep(name="e", condition="true", target="a", max_iterations=2),
    )
    mixing = [i for i in issues if i.code == "scope_mixing"]
    assert [i.location for i in mixing] == [
        "steps[1].next",
        "steps[2].end",
        "steps[3].type",
        "steps[4].type",
    ]
    for issue in mixing:
        assert issue.message.startswith(
            "this scope uses dependsOn (a DAG), so next/choice/loop cannot be used here; "
        )


# --- 5. cycles ----------------------------------------------------------------------------


def test_depends_on_cycle_listed() -> None:
    issues = found(
        task("a", depends_on=("c",)),
        task("b", depends_on=("a",)),
        task("c", depends_on=("b",)),
        task("d", depends_on=("c",)),
    )
    issue = only(issues, "cycle")
    assert issue.location == "steps[0].dependsOn[0]"
    assert issue.message == "dependsOn cycle: a -> c -> b -> a"


def test_two_separate_cycles_both_reported() -> None:
    issues = found(
        task("root"),
        task("a", depends_on=("root", "b")),
        task("b", depends_on=("a",)),
        task("c", depends_on=("d",)),
        task("d", depends_on=("c",)),
    )
    cycles = [i for i in issues if i.code == "cycle"]
    assert [(i.location, i.message) for i in cycles] == [
        ("steps[1].dependsOn[1]", "dependsOn cycle: a -> b -> a"),
        ("steps[3].dependsOn[0]", "dependsOn cycle: c -> d -> c"),
    ]


def test_self_reference() -> None:
    issues = found(task("a"), task("b", depends_on=("a", "b")))
    issue = only(issues, "self_reference")
    assert issue.location == "steps[1].dependsOn[1]"
    assert "'b' depends on itself" in issue.message
    assert "cycle" not in codes(issues)


# --- 6. reachability ----------------------------------------------------------------------


def test_unreachable_step() -> None:
    issue = only(found(task("a", next="done"), task("orphan"), end("done")), "unreachable")
    assert issue.location == "steps[1]"
    assert "'orphan' can never run" in issue.message


def test_steps_reached_by_choice_loop_and_error_edges_are_reachable() -> None:
    issues = found(
        task("a", on_error="branch", error_next="handler", next="c"),
        task("handler", end=True),
        models.ChoiceStep(
            name="c", choices=(models.ChoiceRule(condition="input.x", next="d"),), default="e"
        ),
        task("d"),
        models.LoopStep(
            name="again", condition="prev.more", target="d", max_iterations=3, end=True
        ),
        end("e"),
    )
    assert issues == []


def test_dag_steps_are_always_reachable() -> None:
    assert found(task("a"), task("b", depends_on=("a",)), task("lone")) == []


def test_loop_target_forward() -> None:
    issues = found(
        models.LoopStep(name="loop", condition="true", target="later", max_iterations=2),
        end("later"),
    )
    issue = only(issues, "loop_target_forward")
    assert issue.location == "steps[0].target"
    assert "'later' comes after the loop" in issue.message


def test_loop_may_target_itself() -> None:
    assert (
        found(models.LoopStep(name="loop", condition="true", target="loop", max_iterations=2)) == []
    )


# --- 7. no end ----------------------------------------------------------------------------


def test_no_end_cycle_reported_once() -> None:
    issues = found(task("start"), task("a"), task("b", next="a"), end("never"))
    issue = only(issues, "no_end")
    assert issue.location == "steps[1]"
    assert "loop with no way to finish: 'a', 'b';" in issue.message
    assert "start" not in issue.message
    assert only(issues, "unreachable").location == "steps[3]"


def test_choice_without_default_is_not_an_end() -> None:
    choice = models.ChoiceStep(
        name="c", choices=(models.ChoiceRule(condition="input.x", next="a"),)
    )
    issue = only(found(task("a"), choice), "no_end")
    assert issue.location == "steps[0]"
    assert "'a', 'c'" in issue.message


def test_step_looping_on_itself() -> None:
    issue = only(found(task("a"), task("spin", next="spin"), end("z")), "no_end")
    assert issue.location == "steps[1]"
    assert "'spin'" in issue.message and "'a'" not in issue.message


def test_empty_choice_is_not_also_no_end() -> None:
    assert codes(found(task("a"), models.ChoiceStep(name="c", choices=()))) == ["empty_choice"]


def test_error_edge_is_no_way_to_finish() -> None:
    issues = found(task("a", on_error="branch", error_next="h"), task("b", next="a"), end("h"))
    assert only(issues, "no_end").location == "steps[0]"


# --- 8. error branch ----------------------------------------------------------------------


def test_error_branch_rules() -> None:
    issues = found(
        task("a", on_error="branch"),
        task("b", on_error="continue", error_next="h"),
        end("h"),
    )
    rules = [i for i in issues if i.code == "error_branch"]
    assert [i.location for i in rules] == ["steps[0].onError", "steps[1].errorBranch"]
    assert "needs errorBranch" in rules[0].message
    assert "onError: continue" in rules[1].message


# --- 9, 10. poll and loop bounds ----------------------------------------------------------


def test_poll_unbounded_and_interval() -> None:
    issues = found(models.PollStep(name="p", check="ready", interval=0))
    assert only(issues, "poll_unbounded").location == "steps[0]"
    assert "timeout or maxAttempts" in only(issues, "poll_unbounded").message
    assert only(issues, "poll_interval").location == "steps[0].interval"


def test_poll_bounded_is_fine() -> None:
    assert found(models.PollStep(name="p", check="ready", interval="5s", max_attempts=3)) == []
    assert found(models.PollStep(name="p", check="ready", interval="5s", timeout="1h")) == []


def test_loop_unbounded() -> None:
    issue = only(found(models.LoopStep(name="l", condition="true", target="l")), "loop_unbounded")
    assert issue.location == "steps[0]"
    assert "maxIterations or timeout" in issue.message


# --- 11. waits ----------------------------------------------------------------------------


def test_wait_kind_none_and_two() -> None:
    issues = found(
        models.WaitStep(name="none"),
        models.WaitStep(name="two", duration="1s", event="go"),
        models.WaitStep(name="ok", until="2030-01-01T00:00:00Z"),
    )
    kinds = [i for i in issues if i.code == "wait_kind"]
    assert [i.location for i in kinds] == ["steps[0]", "steps[1]"]
    assert "(got none)" in kinds[0].message
    assert "(got duration and event)" in kinds[1].message


def test_wait_timeout_only_on_event_waits() -> None:
    issues = found(models.WaitStep(name="w", duration="1m", timeout="1h"))
    issue = only(issues, "wait_timeout")
    assert issue.location == "steps[0].timeout"
    assert found(models.WaitStep(name="w", event="approved", timeout="1h")) == []


# --- 12. expressions ----------------------------------------------------------------------


def test_bad_expression_everywhere() -> None:
    mapped = models.MapStep(
        name="m",
        items="input.xs +",
        iterator=models.Branch(
            name="it",
            steps=(
                task("inner", depends_on=()),
                models.PassStep(name="p", transform="item ==", end=True),
            ),
        ),
    )
    issues = found(
        models.ChoiceStep(
            name="c",
            choices=(models.ChoiceRule(condition="input.x >", next="t"),),
            default="t",
        ),
        task("t", input={"order": {"ids": ["ok", "${{ input.id + }}"]}}),
        models.LoopStep(name="l", condition="__import__('os')", target="t", max_iterations=2),
        models.WaitStep(name="w", until="input.when("),
        models.PassStep(name="r", result={"note": "x ${{ steps[ }}"}),
        mapped,
        models.PollStep(
            name="poll", check="ready", interval=1, max_attempts=2, input="${{ a.b( }}"
        ),
        models.SubworkflowStep(name="sub", workflow="child", input=["${{ ) }}"]),
        triggers=(models.Trigger(event="E", condition="plan ==="),),
    )
    bad = [i for i in issues if i.code == "bad_expression"]
    assert [i.location for i in bad] == [
        "triggers[0].condition",
        "steps[0].choices[0].condition",
        "steps[1].input.order.ids[1]",
        "steps[2].condition",
        "steps[3].until",
        "steps[4].result.note",
        "steps[5].items",
        "steps[5].iterator.steps[1].transform",
        "steps[6].input",
        "steps[7].input[0]",
    ]
    assert all(i.message.startswith(("expression", "template")) for i in bad)
    assert "input.x >" in bad[1].message


def test_dag_condition_is_compiled() -> None:
    issue = only(
        found(task("a"), task("b", depends_on=("a",), condition="a.risk <")), "bad_expression"
    )
    assert issue.location == "steps[1].condition"


def test_trigger_condition_names_are_not_checked() -> None:
    assert (
        found(task("a"), triggers=(models.Trigger(event="E", condition='plan === "enterprise"'),))
        == []
    )


def test_callables_are_not_compiled() -> None:
    choice = models.ChoiceStep(
        name="c", choices=(models.ChoiceRule(condition=lambda ctx: True, next="a"),), default="a"
    )
    assert found(choice, end("a")) == []


# --- 13. unknown names --------------------------------------------------------------------


def test_unknown_name_with_did_you_mean() -> None:
    issues = found(task("score"), task("charge", depends_on=("score",), condition="scor.risk > 1"))
    issue = only(issues, "unknown_name")
    assert issue.location == "steps[1].condition"
    assert (
        issue.message == "unknown name 'scor' in expression 'scor.risk > 1' (did you mean 'score'?)"
    )


def test_known_names() -> None:
    expr = "input.a and steps and prev and metadata and event and score.risk and true and null"
    assert found(task("score"), task("b", depends_on=("score",), condition=expr)) == []


def test_unknown_name_in_template() -> None:
    issue = only(found(task("a", input={"x": "id ${{ inptu.id }}"})), "unknown_name")
    assert issue.location == "steps[0].input.x"
    assert "unknown name 'inptu'" in issue.message and "did you mean 'input'?" in issue.message


def test_item_and_index_only_inside_iterator() -> None:
    inner = models.Branch(name="it", steps=(task("each", input={"x": "${{ item.id + index }}"}),))
    mapped = models.MapStep(name="m", items="input.xs", iterator=inner)
    assert found(mapped) == []
    issues = found(task("a", input="${{ item }}"))
    assert only(issues, "unknown_name").location == "steps[0].input"


def test_enclosing_scope_names_visible_sibling_branch_names_not() -> None:
    left = models.Branch(name="left", steps=(task("l1", input="${{ before.x }}"),))
    right = models.Branch(name="right", steps=(task("r1", input="${{ l1 }}"),))
    par = models.ParallelStep(name="p", branches=(left, right))
    issues = found(task("before"), par)
    issue = only(issues, "unknown_name")
    assert issue.location == "steps[1].branches[1].steps[0].input"


# --- 14. timeouts and retry ---------------------------------------------------------------


def test_bad_timeouts() -> None:
    issues = found(task("a", timeout=0), timeout=0)
    assert [(i.code, i.location) for i in issues] == [
        ("bad_timeout", "timeout"),
        ("bad_timeout", "steps[0].timeout"),
    ]


def test_retry_zero_interval_and_small_max_interval_are_fine() -> None:
    policy = models.RetryPolicy(max_attempts=5, interval=0, max_interval=0)
    assert (
        found(
            task("a", retry=policy), default_retry=models.RetryPolicy(interval=10, max_interval=1)
        )
        == []
    )


def test_retry_on_critical_error_and_negative_interval() -> None:
    policy = models.RetryPolicy(retry_on=(ValueError, errors.CriticalError))
    negative = models.RetryPolicy.model_construct(interval=-1.0, max_interval=30.0, retry_on=None)
    issues = found(task("a", retry=policy), default_retry=negative)
    assert [(i.code, i.location) for i in issues] == [
        ("retry", "defaultRetry.interval"),
        ("retry", "steps[0].retry.retryOn[1]"),
    ]
    assert "never retried" in issues[1].message


# --- 15, 16. subworkflow and trigger rule -------------------------------------------------


def test_subworkflow_blank_name() -> None:
    issue = only(found(models.SubworkflowStep(name="s", workflow="  ")), "subworkflow")
    assert issue.location == "steps[0].workflow"


def test_trigger_rule_in_sequential_scope() -> None:
    issue = only(found(task("a", trigger="all_done")), "trigger_rule")
    assert issue.location == "steps[0].trigger"
    assert "'all_done'" in issue.message
    assert found(task("a"), task("b", depends_on=("a",), trigger="all_done")) == []


# --- together -----------------------------------------------------------------------------


def test_every_problem_is_reported() -> None:
    inner = models.Branch(name="b", steps=(task("x", next="y"),))
    issues = found(
        task("a", on_error="branch", error_next="bb"),
        task("a"),
        models.ParallelStep(name="p", branches=(inner,)),
        models.PollStep(name="poll", check="c", interval=1),
        models.LoopStep(name="loop", condition="sorce > 1", target="a"),
        models.WaitStep(name="w"),
        timeout=0,
    )
    assert sorted(codes(issues)) == sorted(
        [
            "bad_timeout",
            "unknown_reference",
            "duplicate_name",
            "unknown_reference",
            "poll_unbounded",
            "loop_unbounded",
            "unknown_name",
            "wait_kind",
        ]
    )


def _complex() -> models.WorkflowDefinition:
    dag = (
        branch("checks")
        .task("validate", handler="validatePayment", input={"order": "${{ input.orderId }}"})
        .task("score", handler="score", depends_on=("validate",))
        .task(
            "charge",
            handler="charge",
            depends_on=("score",),
            condition="score.risk < 0.3",
            on_error="branch",
            error_next="notify-admin",
        )
        .task("review", handler="review", depends_on=("score",), condition="score.risk >= 0.3")
        .task("follow-up", handler="survey", depends_on=("charge", "review"), trigger="all_done")
        .task("notify-admin", handler="alert")
        .build()
    )
    each = branch("each").task(
        "ship-one", handler="ship", input={"sku": "${{ item.sku }}", "n": "${{ index }}"}
    )
    return (
        workflow("order", version="2")
        .timeout("1h")
        .default_retry(max_attempts=3, interval="1s")
        .trigger("Order.placed", condition='plan === "enterprise"')
        .task("start", handler="noop", retry={"max_attempts": 2}, timeout="30s")
        .choice(
            "route",
            choices=[when("input.express", next="fan-out"), when(lambda ctx: False, next="slow")],
            default="slow",
        )
        .task("slow", handler="noop", next="fan-out")
        .parallel("fan-out", branches=[dag, branch("ping").task("ping", handler="noop").build()])
        .poll("await-ship", check="shipped", interval="10s", timeout="1d")
        .map("ship-all", items="input.lines", iterator=each.build(), max_concurrency=4)
        .wait("cool-off", duration="1h")
        .wait("approval", event="approved", timeout="3d")
        .pass_("summary", transform="{'done': true, 'lines': len(input.lines)}")
        .loop("again", condition="prev.done == false", target="summary", max_iterations=3)
        .subworkflow("invoice", workflow="billing", input={"order": "${{ input.orderId }}"})
        .end("done")
        .build()
    )


def test_valid_complex_definition_has_no_issues() -> None:
    assert validation.validate(_complex()) == []


def _timed(definition: models.WorkflowDefinition) -> list[errors.Issue]:
    start = time.perf_counter()
    issues = validation.validate(definition)
    print(
        f"validated {len(definition.steps)} steps in {(time.perf_counter() - start) * 1000:.1f} ms"
    )
    return issues


def test_thousand_step_sequential_definition() -> None:
    steps = [
        task(f"s{i}", input={"x": f"${{{{ s{i - 1}.x }}}}"} if i else None) for i in range(1000)
    ]
    assert _timed(define(*steps)) == []


def test_thousand_step_dag_definition() -> None:
    steps = [task("s0")] + [
        task(
            f"s{i}",
            depends_on=tuple(f"s{j}" for j in range(max(i - 2, 0), i)),
            condition=f"s{i - 1}.ok",
        )
        for i in range(1, 1000)
    ]
    assert _timed(define(*steps)) == []


# --- property -----------------------------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e", "f-g", "has space", "x/y"]
REFS = [*NAMES, "zz"]
EXPRS = ["true", "a.x > 1", "input.v +", "item", "__class__", "${{ b }}"]


@st.composite
def random_step(draw: st.DrawFn, depth: int = 0) -> models.StepBase:
    name = draw(st.sampled_from(NAMES))
    common: dict[str, Any] = {
        "next": draw(st.none() | st.sampled_from(REFS)),
        "end": draw(st.booleans()),
        "depends_on": tuple(draw(st.lists(st.sampled_from(REFS), max_size=3))),
        "on_error": draw(st.sampled_from(["fail", "continue", "branch"])),
        "error_next": draw(st.none() | st.sampled_from(REFS)),
        "condition": draw(st.none() | st.sampled_from(EXPRS)),
        "trigger": draw(st.sampled_from(models.TRIGGER_RULES)),
    }
    kinds = ["task", "choice", "loop", "wait", "poll", "pass"] + (
        ["parallel", "map"] if depth < 2 else []
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "task":
        return task(
            name, input=draw(st.sampled_from([None, "${{ a }}", {"k": ["${{ c. }}"]}])), **common
        )
    if kind == "choice":
        rules = draw(st.lists(st.tuples(st.sampled_from(EXPRS), st.sampled_from(REFS)), max_size=3))
        choices = tuple(models.ChoiceRule(condition=c, next=n) for c, n in rules)
        return models.ChoiceStep(
            name=name, choices=choices, default=draw(st.none() | st.sampled_from(REFS)), **common
        )
    if kind == "loop":
        common["condition"] = draw(st.sampled_from(EXPRS))
        bound = draw(st.none() | st.integers(1, 5))
        return models.LoopStep(
            name=name, target=draw(st.sampled_from(REFS)), max_iterations=bound, **common
        )
    if kind == "wait":
        kw = draw(
            st.fixed_dictionaries(
                {}, optional={"duration": st.just(1), "event": st.just("e"), "timeout": st.just(0)}
            )
        )
        return models.WaitStep(name=name, **kw, **common)
    if kind == "poll":
        return models.PollStep(
            name=name, check="c", interval=draw(st.sampled_from([0, 1])), **common
        )
    if kind == "pass":
        return models.PassStep(
            name=name, transform=draw(st.none() | st.sampled_from(EXPRS)), **common
        )
    inner = st.lists(random_step(depth + 1), max_size=4).map(tuple)
    if kind == "parallel":
        branches = draw(
            st.lists(st.builds(models.Branch, name=st.sampled_from(NAMES), steps=inner), max_size=3)
        )
        return models.ParallelStep(name=name, branches=tuple(branches), **common)
    iterator = models.Branch(name="it", steps=draw(inner))
    return models.MapStep(
        name=name, items=draw(st.sampled_from(EXPRS)), iterator=iterator, **common
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(random_step(), max_size=8))
def test_random_graphs_never_raise(steps: list[models.StepBase]) -> None:
    issues = validation.validate(define(*steps))
    assert isinstance(issues, list)
    assert all(isinstance(i, errors.Issue) and i.code and i.message for i in issues)
    assert validation.validate(define(*steps)) == issues  # deterministic


def test_wait_until_accepts_iso_strings_as_times() -> None:
    from datetime import UTC, datetime

    from statemachine.definition.builder import workflow as wf

    built = wf("until-iso").wait("w", until="2030-01-02T03:04:05Z").build()
    step = built.steps[0]
    assert step.until == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)  # type: ignore[union-attr]
