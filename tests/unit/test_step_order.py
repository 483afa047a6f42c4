"""The order an instance's steps are listed in: when they started, ties in the graph's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from statemachine import branch, workflow
from statemachine.definition import graph
from statemachine.runtime.plan import plan_for

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_dag_is_ordered_in_waves_each_as_written() -> None:
    wf = (
        workflow("waves")
        .task("load", "noop", depends_on=["zeta", "alpha"])
        .task("zeta", "noop")
        .task("alpha", "noop", on_error="branch", error_next="alarm")
        .task("alarm", "noop")
        .task("beta", "noop", depends_on=["zeta"])
        .build()
    )
    # alarm runs only after alpha failed: it is in the wave after alpha
    assert graph.graph_order(wf.steps) == ["zeta", "alpha", "load", "alarm", "beta"]


def test_a_sequential_scope_is_ordered_as_written() -> None:
    wf = workflow("seq").task("welcome", "noop").wait("wait-3-days", duration="3d").build()
    assert graph.graph_order(wf.steps) == ["welcome", "wait-3-days"]


def test_ties_go_by_the_graph_branches_after_their_container_items_by_index() -> None:
    wf = (
        workflow("nested")
        .task("z-first", "noop")
        .parallel("fan", branches=[branch("b").task("inner", "noop").build()])
        .map("each", items="input.xs", iterator=branch("it").task("send", "noop").build())
        .task("a-last", "noop")
        .build()
    )
    plan = plan_for(wf)
    paths = ["a-last", "each/it@10/send", "fan/b/inner", "each", "each/it@2/send", "z-first"]
    paths += ["fan"]
    ordered = sorted(paths, key=lambda p: plan.order_key(p, T0, None))
    assert ordered == [
        "z-first",
        "fan",
        "fan/b/inner",
        "each",
        "each/it@2/send",
        "each/it@10/send",
        "a-last",
    ]


def test_time_first_a_skipped_step_at_its_decision_an_undecided_one_last() -> None:
    wf = workflow("t").task("a", "noop").task("b", "noop").task("c", "noop").build()
    plan = plan_for(wf)
    later = T0 + timedelta(seconds=1)
    keys = {
        "c": plan.order_key("c", T0, None),  # started first
        "a": plan.order_key("a", None, later),  # skipped a second later: never started
        "b": plan.order_key("b", None, None),  # not decided yet
    }
    assert sorted(keys, key=keys.__getitem__) == ["c", "a", "b"]
