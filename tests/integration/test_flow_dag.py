"""DAG scopes (``dependsOn``) on real databases, from YAML text and from the builder.

Roots start together, ``condition`` skips with a recorded reason, each trigger rule decides
after a failed (``onError: continue``) dependency, and an ``errorBranch`` runs only on error.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import Engine, StepContext, WorkflowDefinition, branch, load_yaml, workflow
from statemachine.testing import ManualClock

SLEEP = 0.5
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


class Naps:
    """An async ``nap`` action and a sync ``snooze`` one that record when they ran."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    async def nap(self, data: Any, ctx: StepContext) -> str:
        start = time.perf_counter()
        await asyncio.sleep(SLEEP)
        with self.lock:
            self.spans[ctx.step_name] = (start, time.perf_counter())
        return f"{ctx.step_name}-done"

    def snooze(self, data: Any, ctx: StepContext) -> str:
        start = time.perf_counter()
        time.sleep(SLEEP)
        with self.lock:
            self.spans[ctx.step_name] = (start, time.perf_counter())
        return f"{ctx.step_name}-done"

    @property
    def elapsed(self) -> float:
        return max(e for _, e in self.spans.values()) - min(s for s, _ in self.spans.values())


def _join(data: Any, ctx: StepContext) -> dict[str, Any]:
    return {"left": ctx.steps["left"], "right": ctx.steps["right"]}


ROOTS_YAML = """
id: dag-roots
steps:
  - id: left
    action: nap
  - id: right
    action: snooze
  - id: join
    action: join
    dependsOn: [left, right]
"""


def _roots(source: str) -> WorkflowDefinition:
    if source == "yaml":
        return load_yaml(ROOTS_YAML)
    return (
        workflow("dag-roots")
        .task("left", "nap")
        .task("right", "snooze")
        .task("join", "join", depends_on=["left", "right"])
        .build()
    )


@pytest.mark.parametrize("source", ["yaml", "builder"])
def test_independent_roots_start_together(engine: Engine, source: str) -> None:
    naps = Naps()
    engine.action("nap")(naps.nap)
    engine.action("snooze")(naps.snooze)
    engine.action("join")(_join)
    engine.register(_roots(source))

    inst = engine.execute("dag-roots", {})

    assert inst.status == "completed"
    assert set(naps.spans) == {"left", "right"}
    assert naps.elapsed < 0.9, f"roots ran one after the other ({naps.elapsed:.2f}s)"
    join = inst.step_results["join"]
    assert join.status == "completed"
    assert join.output == {"left": "left-done", "right": "right-done"}
    assert join.started_at is not None
    for root in ("left", "right"):
        done = inst.step_results[root].completed_at
        assert done is not None and done <= join.started_at
    assert inst.output == {"join": {"left": "left-done", "right": "right-done"}}


def test_yaml_and_builder_dags_with_action_names_are_the_same_graph() -> None:
    assert _roots("yaml").hash == _roots("builder").hash


# -- condition -----------------------------------------------------------------------------

RISK_YAML = """
id: risk
steps:
  - id: score
    action: score
  - id: charge
    action: record
    dependsOn: [score]
    condition: score.risk < 0.3
  - id: review
    action: record
    dependsOn: [score]
    condition: score.risk >= 0.3
  - id: follow-up
    action: record
    dependsOn: [charge, review]
"""


def test_false_condition_skips_and_history_says_why(engine: Engine) -> None:
    ran: list[str] = []
    engine.action("score")(lambda data: {"risk": data["risk"]})
    engine.action("record")(lambda data, ctx: ran.append(ctx.step_name) or ctx.step_name)
    engine.register(load_yaml(RISK_YAML))

    inst = engine.execute("risk", {"risk": 0.9})

    assert inst.status == "completed"
    assert sorted(ran) == ["follow-up", "review"]
    assert inst.step_results["charge"].status == "skipped"
    assert inst.step_results["review"].status == "completed"
    # default rule none_failed_min_one_success: a skipped dependency is not a failure
    assert inst.step_results["follow-up"].status == "completed"
    [entry] = [h for h in engine.history(inst.id) if h.type == "workflow.step.skipped"]
    assert entry.step == "charge"
    assert entry.data["reason"] == "condition"
    assert "score.risk < 0.3" in entry.data["condition"]
    values = entry.data["values"]
    assert values.get("score") == {"risk": 0.9} or values.get("score.risk") == 0.9, values


def test_condition_on_a_builder_dag_step(engine: Engine) -> None:
    engine.register(
        workflow("gated")
        .task("score", lambda x: {"risk": x["risk"]})
        .task("charge", lambda x: "charged", depends_on=["score"], condition="score.risk < 0.3")
        .build()
    )
    low = engine.execute("gated", {"risk": 0.1})
    high = engine.execute("gated", {"risk": 0.5})
    assert low.step_results["charge"].status == "completed"
    assert high.step_results["charge"].status == "skipped"
    assert low.status == high.status == "completed"


# -- trigger rules -------------------------------------------------------------------------

RULES = (
    "all_success",
    "all_done",
    "one_success",
    "none_failed_min_one_success",
    "always",
    "all_failed",
    "one_failed",
    "none_failed",
    "none_skipped",
)

RULES_YAML = """
id: rules
steps:
  - id: ok
    action: maybe
    onError: continue
  - id: bad
    action: maybe
    onError: continue
""" + "".join(
    f"""  - id: after-{rule}
    action: record
    dependsOn: [ok, bad]
    trigger: {rule}
"""
    for rule in RULES
)


@pytest.mark.parametrize(
    ("failing", "expected_to_run"),
    [
        pytest.param([], set(RULES) - {"all_failed", "one_failed"}, id="none-failed"),
        pytest.param(
            ["bad"],
            {"all_done", "one_success", "always", "one_failed", "none_skipped"},
            id="one-failed",
        ),
        pytest.param(
            ["ok", "bad"],
            {"all_done", "always", "all_failed", "one_failed", "none_skipped"},
            id="both-failed",
        ),
    ],
)
def test_trigger_rules_after_a_failed_dependency(
    engine: Engine, failing: list[str], expected_to_run: set[str]
) -> None:
    ran: list[str] = []

    def maybe(data: Any, ctx: StepContext) -> str:
        if ctx.step_name in data["fail"]:
            raise RuntimeError(f"{ctx.step_name} broke")
        return ctx.step_name

    def record(data: Any, ctx: StepContext) -> str:
        ran.append(ctx.step_name)
        return ctx.step_name

    engine.action("maybe")(maybe)
    engine.action("record")(record)
    engine.register(load_yaml(RULES_YAML))

    inst = engine.execute("rules", {"fail": failing})

    assert inst.status == "completed"  # every failure was taken by onError: continue
    for name in ("ok", "bad"):
        assert inst.step_results[name].status == ("failed" if name in failing else "completed")
    assert sorted(ran) == sorted(f"after-{rule}" for rule in expected_to_run)
    for rule in RULES:
        status = inst.step_results[f"after-{rule}"].status
        assert status == ("completed" if rule in expected_to_run else "skipped"), rule


def test_trigger_rule_from_the_builder(engine: Engine) -> None:
    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    engine.register(
        workflow("cleanup")
        .task("work", broken, on_error="continue")
        .task("report", lambda x: "reported", depends_on=["work"])
        .task("cleanup", lambda x: "cleaned", depends_on=["work"], trigger="all_done")
        .build()
    )
    inst = engine.execute("cleanup", {})
    assert inst.status == "completed"
    assert inst.step_results["work"].status == "failed"
    assert inst.step_results["report"].status == "skipped"
    assert inst.step_results["cleanup"].status == "completed"


ETL_YAML = """
id: etl
steps:
  - id: extract_a
    action: extract
    onError: continue
  - id: extract_b
    action: extract
  - id: transform_a
    action: record
    dependsOn: [extract_a]
  - id: transform_b
    action: record
    dependsOn: [extract_b]
  - id: load
    action: record
    dependsOn: [transform_a, transform_b]
  - id: page
    action: record
    dependsOn: [load]
    trigger: one_failed
"""


def test_a_failure_two_hops_up_keeps_load_from_running(engine: Engine) -> None:
    """issue 17: ``transform_a`` is skipped because ``extract_a`` failed, so it is
    upstream_failed for ``load``, which (default rule) does not run, as in Airflow."""
    ran: list[str] = []

    def extract(data: Any, ctx: StepContext) -> str:
        if ctx.step_name == "extract_a":
            raise RuntimeError("source a is down")
        return ctx.step_name

    engine.action("extract")(extract)
    engine.action("record")(lambda data, ctx: ran.append(ctx.step_name) or ctx.step_name)
    engine.register(load_yaml(ETL_YAML))

    done = engine.execute("etl", {})
    stored = engine.get(done.id)

    assert done.status == stored.status == "completed"
    assert sorted(ran) == ["page", "transform_b"]  # one_failed fires on upstream_failed
    for inst in (done, stored):  # the run's own result, and the one read back
        transform_a, load = inst.step_results["transform_a"], inst.step_results["load"]
        assert transform_a.status == load.status == "skipped"
        assert transform_a.error is None and load.error is None
        assert transform_a.reason == {
            "kind": "trigger_rule",
            "rule": "none_failed_min_one_success",
            "dependencies": {"extract_a": "failed"},
            "upstream_failed": True,
        }
        assert load.reason is not None
        assert load.reason["kind"] == "trigger_rule"
        assert load.reason["upstream_failed"] is True
        assert load.reason["dependencies"]["transform_a"] == "upstream_failed"
        assert inst.step_results["page"].status == "completed"
        assert inst.step_results["page"].reason is None
        assert inst.step_results["extract_a"].error is not None
    history = engine.history(done.id)
    skipped = {h.step: h.data for h in history if h.type == "workflow.step.skipped"}
    reason = stored.step_results["load"].reason or {}
    assert skipped["load"] == {
        "reason": "trigger_rule",
        **{k: reason[k] for k in reason if k != "kind"},
    }


def test_a_condition_skip_reason_is_on_the_step_result(engine: Engine) -> None:
    engine.action("score")(lambda data: {"risk": data["risk"]})
    engine.action("record")(lambda data: "ok")
    engine.register(load_yaml(RISK_YAML))
    inst = engine.get(engine.execute("risk", {"risk": 0.9}).id)
    reason = inst.step_results["charge"].reason
    assert reason is not None and reason["kind"] == "condition"
    assert "score.risk < 0.3" in reason["condition"]


FIRST_WINS_YAML = """
id: first-wins
steps:
  - id: fast
    action: record
  - id: slow
    type: wait
    duration: 1h
  - id: either
    action: record
    dependsOn: [fast, slow]
    trigger: one_success
  - id: watch
    action: record
    dependsOn: [slow]
    trigger: always
  - id: both
    action: record
    dependsOn: [fast, slow]
"""


def test_one_success_and_always_do_not_wait_for_the_rest(timed: Engine, clock: ManualClock) -> None:
    ran: list[str] = []
    timed.action("record")(lambda data, ctx: ran.append(ctx.step_name) or ctx.step_name)
    timed.register(load_yaml(FIRST_WINS_YAML))

    inst = timed.execute("first-wins", {})

    assert inst.status == "waiting"
    assert inst.step_results["slow"].status == "waiting"
    assert sorted(ran) == ["either", "fast", "watch"]  # both waits for slow
    assert inst.step_results["either"].output == "either"
    clock.advance("1h")
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "completed"
    assert sorted(ran) == ["both", "either", "fast", "watch"]


# -- the order steps are listed in ---------------------------------------------------------

ORDER_YAML = """
id: listed
steps:
  - id: welcome
    action: noop
  - id: wait-3-days
    type: wait
    duration: 3d
  - id: tips
    action: noop
"""

DAG_ORDER_YAML = """
id: dag-listed
steps:
  - id: zeta
    action: noop
  - id: mid
    action: noop
    dependsOn: [zeta]
    condition: input.never
  - id: alpha
    action: noop
    dependsOn: [mid]
    trigger: all_done
  - id: beta
    action: noop
"""


def test_steps_are_listed_in_the_order_they_started(timed: Engine, clock: ManualClock) -> None:
    """Under a ManualClock every step of a decision starts at the same instant: ties go by the
    graph's order (a DAG's in waves: roots, then what follows them), never by name."""
    timed.register([load_yaml(ORDER_YAML), load_yaml(DAG_ORDER_YAML)])
    first = timed.execute("listed", {})
    assert list(first.step_results) == ["welcome", "wait-3-days"]
    assert list(timed.get(first.id).step_results) == ["welcome", "wait-3-days"]
    clock.advance("3d")
    timed.run_due()
    assert list(timed.get(first.id).step_results) == ["welcome", "wait-3-days", "tips"]
    [listed] = timed.list(workflow="listed")
    assert list(listed.step_results) == ["welcome", "wait-3-days", "tips"]

    dag = timed.execute("dag-listed", {"never": False})
    assert dag.status == "completed"
    assert dag.step_results["mid"].status == "skipped"
    expected = ["zeta", "beta", "mid", "alpha"]
    assert list(dag.step_results) == expected
    assert list(timed.get(dag.id).step_results) == expected


# -- errorBranch ---------------------------------------------------------------------------

ERROR_BRANCH_YAML = """
id: charge-flow
steps:
  - id: charge
    action: charge
    onError: branch
    errorBranch: notify-admin
  - id: receipt
    action: record
    dependsOn: [charge]
  - id: notify-admin
    action: alert
"""


def test_error_branch_runs_only_when_the_error_happens(engine: Engine) -> None:
    alerts: list[Any] = []
    receipts: list[Any] = []

    def charge(data: Any) -> dict[str, Any]:
        if data["declined"]:
            raise RuntimeError("card declined")
        return {"charged": data["amount"]}

    engine.action("charge")(charge)
    engine.action("record")(lambda data: receipts.append(data) or "receipt")
    engine.action("alert")(lambda data, ctx: alerts.append(ctx.instance_id) or "alerted")
    engine.register(load_yaml(ERROR_BRANCH_YAML))

    good = engine.execute("charge-flow", {"declined": False, "amount": 5})
    assert good.status == "completed"
    assert alerts == []
    assert receipts == [{"charged": 5}]
    assert good.step_results["charge"].status == "completed"
    assert good.step_results["receipt"].status == "completed"
    admin = good.step_results.get("notify-admin")
    assert admin is None or admin.status in ("pending", "skipped")

    bad = engine.execute("charge-flow", {"declined": True, "amount": 5})
    assert bad.status == "completed"  # the error branch handled the failure
    assert alerts == [bad.id]
    assert receipts == [{"charged": 5}]  # the receipt did not run again
    assert bad.step_results["charge"].status == "failed"
    assert bad.step_results["notify-admin"].status == "completed"
    assert bad.step_results["receipt"].status == "skipped"


ERROR_BRANCH_CHAIN_YAML = """
id: error-chain
steps:
  - id: charge
    action: charge
    onError: branch
    errorBranch: admin
  - id: admin
    action: record
  - id: after-admin
    action: record
    dependsOn: [admin]
  - id: final
    action: record
    dependsOn: [charge, after-admin]
    trigger: all_done
"""


def test_error_branch_dependents_follow_it(engine: Engine) -> None:
    ran: list[str] = []

    def charge(data: Any) -> str:
        if data["declined"]:
            raise RuntimeError("card declined")
        return "charged"

    engine.action("charge")(charge)
    engine.action("record")(lambda data, ctx: ran.append(ctx.step_name) or ctx.step_name)
    engine.register(load_yaml(ERROR_BRANCH_CHAIN_YAML))

    bad = engine.execute("error-chain", {"declined": True})
    assert bad.status == "completed"
    assert ran == ["admin", "after-admin", "final"]
    ran.clear()
    good = engine.execute("error-chain", {"declined": False})
    assert good.status == "completed"
    assert ran == ["final"]
    assert good.step_results["after-admin"].status == "skipped"


# -- skips, failures, timers, retries ------------------------------------------------------

SKIPS_YAML = """
id: skips
steps:
  - id: a
    action: noop
    condition: input.go
  - id: b
    action: noop
  - id: r-all-success
    action: noop
    dependsOn: [a, b]
    trigger: all_success
  - id: r-one-success
    action: noop
    dependsOn: [a, b]
    trigger: one_success
  - id: r-default
    action: noop
    dependsOn: [a, b]
  - id: r-only-a
    action: noop
    dependsOn: [a]
  - id: r-after-skip
    action: noop
    dependsOn: [r-only-a]
    trigger: all_done
"""


def test_skipped_dependencies_under_each_rule(engine: Engine) -> None:
    engine.register(load_yaml(SKIPS_YAML))
    inst = engine.execute("skips", {"go": False})
    assert inst.status == "completed"
    status = {name: result.status for name, result in inst.step_results.items()}
    assert status["a"] == "skipped"
    assert status["b"] == "completed"
    assert status["r-all-success"] == "skipped"
    assert status["r-one-success"] == "completed"
    assert status["r-default"] == "completed"  # skipped is not failed; b succeeded
    assert status["r-only-a"] == "skipped"  # nothing succeeded before it
    assert status["r-after-skip"] == "completed"


def test_an_unhandled_failure_cancels_running_siblings(engine: Engine) -> None:
    finished: list[str] = []

    async def slow(data: Any) -> str:
        await asyncio.sleep(SLEEP)
        finished.append("slow")
        return "slow"

    def broken(data: Any) -> None:
        raise RuntimeError("boom")

    engine.register(
        workflow("dag-fail")
        .task("slow", slow)
        .task("bad", broken)
        .task("after", lambda x: "after", depends_on=["slow", "bad"])
        .build()
    )
    start = time.perf_counter()
    inst = engine.execute("dag-fail", {})
    assert time.perf_counter() - start < SLEEP
    assert inst.status == "failed"
    assert inst.error is not None and inst.error["message"] == "boom"
    assert inst.step_results["bad"].status == "failed"
    assert inst.step_results["slow"].status == "cancelled"
    assert "after" not in inst.step_results or inst.step_results["after"].status != "completed"
    time.sleep(SLEEP + 0.2)
    assert finished == []


def test_retry_of_a_dag_reruns_failed_and_cancelled_steps_only(engine: Engine) -> None:
    calls: Counter[str] = Counter()
    broken = {"bad"}

    def step(name: str) -> Any:
        async def handler(data: Any) -> str:
            calls[name] += 1
            if name in broken:
                raise RuntimeError(f"{name} broke")
            if name == "slow":
                await asyncio.sleep(0.2)
            return name

        return handler

    engine.register(
        workflow("dag-retry")
        .task("root", step("root"))
        .task("bad", step("bad"), depends_on=["root"])
        .task("slow", step("slow"), depends_on=["root"])
        .task("end", step("end"), depends_on=["bad", "slow"])
        .build()
    )
    inst = engine.execute("dag-retry", {})
    assert inst.status == "failed"
    assert inst.step_results["slow"].status == "cancelled"
    broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert calls == Counter({"root": 1, "bad": 2, "slow": 2, "end": 1})
    assert inst.output == {"end": "end"}


def test_yaml_wait_delays_a_dag_step_durably(timed: Engine, clock: ManualClock) -> None:
    ran: list[str] = []
    timed.action("record")(lambda data, ctx: ran.append(ctx.step_name) or ctx.step_name)
    timed.register(
        load_yaml(
            """
id: follow-up
steps:
  - id: buy
    action: record
  - id: survey
    action: record
    wait: 3d
    dependsOn: [buy]
"""
        )
    )
    inst = timed.execute("follow-up", {})
    assert inst.status == "waiting"
    assert ran == ["buy"]
    clock.advance("2d")
    timed.run_due()
    assert timed.get(inst.id).status == "waiting"
    assert ran == ["buy"]
    clock.advance("1d")
    timed.run_due()
    assert timed.get(inst.id).status == "completed"
    assert ran == ["buy", "survey"]


def test_dag_join_of_an_event_and_a_timer(timed: Engine, clock: ManualClock) -> None:
    timed.register(
        workflow("dag-waits")
        .wait("signed", event="signed")
        .wait("cool-off", duration="1h")
        .task(
            "go",
            lambda x, ctx: [ctx.steps["signed"], "cool-off" in ctx.steps],
            depends_on=["signed", "cool-off"],
        )
        .build()
    )
    inst = timed.execute("dag-waits", {})
    timed.send_event(inst.id, "signed", {"doc": 1})
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "waiting"
    assert inst.step_results["signed"].status == "completed"
    clock.advance("1h")
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"go": [{"doc": 1}, True]}


def test_dag_inside_a_parallel_branch(engine: Engine) -> None:
    engine.register(
        workflow("dag-branch")
        .parallel(
            "fan",
            branches=[
                branch("dag")
                .task("x", lambda x: 1)
                .task("y", lambda x: 2)
                .task(
                    "z",
                    lambda x, ctx: ctx.steps["x"] + ctx.steps["y"],
                    depends_on=["x", "y"],
                )
                .build(),
                branch("plain").task("t", lambda x: "plain").build(),
            ],
        )
        .build()
    )
    inst = engine.execute("dag-branch", {})
    assert inst.status == "completed"
    assert inst.output == {"dag": {"z": 3}, "plain": "plain"}
    assert inst.step_results["fan/dag/z"].output == 3
