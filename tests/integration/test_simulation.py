"""``statemachine.testing.simulate``: cases run on scripted actions, coverage read from history.

Each case runs on a real in-memory engine with a ManualClock; nothing here sleeps, so the
"three days later" cases take milliseconds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from statemachine import CriticalError, load_yaml, workflow
from statemachine.simulation.coverage import Edge
from statemachine.testing import SimulationError, load_cases, simulate

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "definitions"

EXPENSE = DEFINITIONS / "expense-approval.yaml"
SUBMITTED = {"expense_id": "exp-1", "amount": 120}
# inputs and results shaped as the real ones (examples/actions.py): the definitions may gain
# input and output schemas
EXPENSE_IN = {"amount": 120}
ORDER_IN = {"order_id": "o-1", "items": ["book"], "amount": 12.5, "email": "ada@example.com"}


class _Order(BaseModel):
    order_id: str


SMALL = """
id: small
steps:
  - id: a
    action: fetch
  - id: c
    type: choice
    choices:
      - condition: a.ok == true
        next: x
    default: y
  - id: x
    action: ship
    end: true
  - id: y
    action: hold
    end: true
"""

RULES = """
id: rules
steps:
  - id: r1
    action: one
  - id: r2
    action: two
    onError: continue
  - id: j
    action: join
    dependsOn: [r1, r2]
    trigger: all_success
  - id: k
    action: join
    dependsOn: [r1, r2]
    trigger: one_failed
"""


def test_coverage_counted_by_hand_on_a_small_definition() -> None:
    # 5 edges: a->c, c->x (choice), c->y (default), x->end, y->end; one case takes 3 of them
    report = simulate(
        load_yaml(SMALL), [{"name": "ok", "actions": {"fetch": {"ok": True}, "ship": {"n": 1}}}]
    )
    cov = report.coverage
    assert [str(e) for e in cov.edges] == [
        "a -> c [next]",
        "c -> x [choice: a.ok == true]",
        "c -> y [default]",
        "x -> end [end]",
        "y -> end [end]",
    ]
    assert cov.edge_coverage == pytest.approx(60.0)
    assert cov.step_coverage == pytest.approx(75.0)
    assert cov.choice_coverage == pytest.approx(50.0)
    assert cov.uncovered_steps == ["y"]
    assert cov.uncovered_edges == [Edge("c", "y", "default"), Edge("y", None, "end")]
    case = report.case("ok")
    assert (case.status, case.output, case.steps) == ("completed", {"n": 1}, ("a", "c", "x"))


def test_the_missing_branch_is_reported_until_a_case_takes_it() -> None:
    approved = {
        "name": "approved",
        "input": {"amount": 120},
        "actions": {"submitExpense": SUBMITTED, "payExpense": {"paid": True}},
        "events": [{"name": "managerDecision", "data": {"approved": True}, "after": "1h"}],
    }
    report = simulate(EXPENSE, [approved])
    uncovered = {str(e) for e in report.coverage.uncovered_edges}
    assert uncovered == {
        "route -> reject [default]",
        "reject -> end [end]",
        "decision -> escalate [error]",
        "escalate -> end [end]",
    }
    assert report.coverage.uncovered_steps == ["reject", "escalate"]
    rejected = {
        **approved,
        "name": "rejected",
        "actions": {"submitExpense": SUBMITTED, "notifyCustomer": {"notified": True}},
        "events": [{"name": "managerDecision", "data": {"approved": False}}],
    }
    report = simulate(EXPENSE, [approved, rejected])
    assert {str(e) for e in report.coverage.uncovered_edges} == {
        "decision -> escalate [error]",
        "escalate -> end [end]",
    }


def test_trigger_rules_and_dag_edges() -> None:
    actions = {"one": {"a": 1}, "two": {"raise": "down"}, "join": {"j": 1}}
    report = simulate(load_yaml(RULES), [{"name": "two fails", "actions": actions}])
    rules = {r.point.step: (r.point.rule, set(r.outcomes)) for r in report.coverage.rules}
    assert rules == {
        "j": ("all_success", {"skipped: trigger_rule"}),
        "k": ("one_failed", {"ran"}),
    }
    taken = {str(e) for e, n in report.coverage.edges.items() if n}
    assert taken == {"r1 -> k [dependency]", "r2 -> k [dependency]"}
    assert report.coverage.edge_coverage == pytest.approx(50.0)
    assert report.case("two fails").output == {"k": {"j": 1}}


def test_exceptions_and_sequences_of_results() -> None:
    order = load_yaml(DEFINITIONS / "order-processing.yaml")
    base = {
        "validateOrder": {"order_id": "o-1", "valid": True, "in_stock": True},
        "reserveInventory": {"reserved": 1},
        "fulfillOrder": {"shipment": "sh-o-1"},
        "sendOrderConfirmation": {"sent_to": "a@example.com"},
    }
    cases = [
        {  # a Python exception instance, then a value: retried after 1s and 2s of clock
            "name": "third try",
            "input": ORDER_IN,
            "actions": {
                **base,
                "chargePayment": [
                    TimeoutError("gateway"),
                    {"raise": "again"},
                    {"charge_id": "c", "amount": 12.5},
                ],
            },
            "advance": "5s",
        },
        {  # without time passing, the retry's timer has not fired: the run waits
            "name": "no time",
            "input": ORDER_IN,
            "actions": {
                **base,
                "chargePayment": [TimeoutError("gateway"), {"charge_id": "c", "amount": 12.5}],
            },
        },
        {
            "name": "declined",
            "input": ORDER_IN,
            "actions": {**base, "chargePayment": CriticalError("card declined")},
            "advance": "1m",
        },
    ]
    report = simulate(order, cases)
    third = report.case("third try")
    assert third.status == "completed"
    assert third.calls["chargePayment"] == 3
    assert third.output == {"sent_to": "a@example.com"}
    assert third.elapsed == pytest.approx(3.0)  # 1s + 2s of backoff, on the simulated clock
    assert report.case("no time").status == "waiting"
    declined = report.case("declined")
    assert declined.status == "failed"
    assert declined.calls["chargePayment"] == 1  # a CriticalError is not retried
    assert declined.error is not None
    assert declined.error["type"] == "CriticalError"
    assert declined.error["message"] == "card declined"
    assert declined.steps == ("validate", "reserve", "charge")


def test_events_are_sent_after_their_time() -> None:
    decision = {"name": "managerDecision", "data": {"approved": True}}
    actions = {
        "submitExpense": SUBMITTED,
        "payExpense": {"paid": True},
        "notifyCustomer": {"notified": True},
    }
    report = simulate(
        EXPENSE,
        [
            {
                "name": "in time",
                "input": EXPENSE_IN,
                "actions": actions,
                "events": [{**decision, "after": "2d"}],
            },
            {
                "name": "too late",
                "input": EXPENSE_IN,
                "actions": actions,
                "events": [{**decision, "after": "4d"}],
            },
        ],
    )
    in_time = report.case("in time")
    assert (in_time.status, in_time.output, in_time.elapsed) == (
        "completed",
        {"paid": True},
        pytest.approx(2 * 86400),
    )
    late = report.case("too late")  # the 3-day wait timed out first: escalated
    assert late.steps == ("submit", "decision", "escalate")
    assert late.elapsed == pytest.approx(3 * 86400)
    assert late.notes == (
        "event 'managerDecision' not delivered: the instance had ended (completed)",
    )


def test_a_wait_timer_fires_when_time_passes() -> None:
    onboarding = DEFINITIONS / "onboarding.yaml"
    mail = {"sendEmail": [{"sent": True, "template": "welcome"}, {"sent": True, "template": "t"}]}
    started = time.perf_counter()
    report = simulate(
        onboarding,
        [
            {"name": "a day", "input": {"email": "a@b"}, "actions": mail, "advance": "1d"},
            {"name": "a week", "input": {"email": "a@b"}, "actions": mail, "advance": "1w"},
        ],
    )
    assert time.perf_counter() - started < 30  # three days of waiting is not slept
    day, week = report.case("a day"), report.case("a week")
    assert (day.status, day.steps, day.calls) == (
        "waiting",
        ("welcome", "wait-3-days"),
        {"sendEmail": 1},
    )
    assert (week.status, week.elapsed, week.output) == (
        "completed",
        pytest.approx(3 * 86400),
        {"sent": True, "template": "t"},
    )


def test_polls_and_loops_take_successive_results() -> None:
    report = simulate(
        DEFINITIONS / "retry-loop.yaml",
        [
            {
                "name": "two pages",
                "input": {"url": "https://api.example.com/items"},
                "actions": {
                    "fetchPage": [
                        {"page": 0, "items": [0, 1, 2], "has_more": True},
                        {"page": 1, "items": [10, 11, 12], "has_more": False},
                    ],
                    "processPage": {"processed": 3},
                },
            }
        ],
    )
    case = report.case("two pages")
    assert case.calls == {"fetchPage": 2, "processPage": 2}
    assert Edge("more-pages", "fetch", "loop", "fetch.has_more == true") in case.edges
    assert report.coverage.edge_coverage == 100.0


def test_subworkflows_need_their_definition() -> None:
    parent = DEFINITIONS / "account-opening.yaml"
    actions = {
        "upsertCrmContact": {"contact_id": "c-1"},
        "verifyIdentity": {"identity": "verified"},
        "screenSanctions": {"sanctions": "clear"},
        "sendEmail": {"sent": True, "template": "account-ready"},
    }
    with pytest.raises(SimulationError, match="starts workflow 'kyc-check': pass its definition"):
        simulate(parent, [{"name": "opened", "input": {"email": "a@b"}, "actions": actions}])
    report = simulate(
        parent,
        [{"name": "opened", "input": {"email": "a@b"}, "actions": actions}],
        definitions=[DEFINITIONS / "kyc-check.yaml", DEFINITIONS / "onboarding.yaml"],
    )
    assert report.case("opened").status == "completed"
    assert report.coverage.edge_coverage == 100.0


def test_a_map_and_a_parallel_enter_their_branches() -> None:
    parallel = load_yaml(DEFINITIONS / "process-order-state-machine.yaml")
    report = simulate(
        parallel,
        [
            {
                "name": "in stock",
                "input": ORDER_IN,
                "actions": {
                    "validateOrder": {"order_id": "o-1", "valid": True, "in_stock": True},
                    "shipOrder": {"tracking": "T", "carrier": "post"},
                    "notifyCustomer": {"notified": True},
                },
            }
        ],
    )
    taken = report.case("in stock").edges
    assert Edge("fulfill", "fulfill/shipping/ship", "branch", "shipping") in taken
    assert Edge("fulfill/shipping/ship", None, "end") in taken
    assert report.coverage.uncovered_steps == ["backorder"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            {"name": "typo", "actions": {"submitExpens": SUBMITTED}},
            "case 'typo': action 'submitExpens' is not used by workflow 'expense-approval' "
            "(did you mean 'submitExpense'?)",
        ),
        (
            {"name": "other", "actions": {"chargeCard": {}}},
            "case 'other': action 'chargeCard' is not used by workflow 'expense-approval'",
        ),
        (
            {"name": "ev", "actions": {}, "events": [{"name": "managerDecison"}]},
            "case 'ev': event 'managerDecison' is not waited for by workflow "
            "'expense-approval' (did you mean 'managerDecision'?)",
        ),
        (
            {"name": "slow", "advance": "3 days"},
            "case 'slow': advance: '3 days' is not a duration",
        ),
        (
            {"name": "late", "events": [{"name": "managerDecision", "after": "soon"}]},
            "case 'late': event 'managerDecision': after: 'soon' is not a duration",
        ),
        (
            {
                "name": "partial",
                "input": EXPENSE_IN,
                "actions": {"submitExpense": SUBMITTED},
                "events": [{"name": "managerDecision", "data": {"approved": True}}],
            },
            "case 'partial': the run reached action 'payExpense', which the case does not mock",
        ),
        (
            {"name": "short", "actions": {"submitExpense": [SUBMITTED, SUBMITTED]}, "avance": 1},
            "case 'short': unknown key 'avance' (did you mean 'advance'?)",
        ),
    ],
)
def test_bad_cases_name_the_case_and_the_problem(case: dict[str, object], message: str) -> None:
    with pytest.raises(SimulationError) as raised:
        simulate(EXPENSE, [case])
    assert message in str(raised.value)


def test_a_list_of_results_that_runs_out_is_an_error() -> None:
    loop = DEFINITIONS / "retry-loop.yaml"
    case = {
        "name": "short",
        "input": {"url": "https://api.example.com/items"},
        "actions": {
            "fetchPage": [{"page": 0, "items": [1], "has_more": True}],
            "processPage": {"processed": 1},
        },
    }
    with pytest.raises(SimulationError, match=r"case 'short': action 'fetchPage' was called 2 "):
        simulate(loop, [case])


def test_cases_from_yaml_text_with_raise() -> None:
    cases = load_cases(
        "- name: boom\n  input: {amount: 120}\n  actions:\n    submitExpense: {raise: no budget, critical: true}\n"
    )
    report = simulate(EXPENSE, cases)
    case = report.case("boom")
    assert case.status == "failed"
    assert case.error is not None
    assert (case.error["type"], case.error["message"]) == ("CriticalError", "no budget")
    assert report.to_dict()["cases"][0]["error"]["message"] == "no budget"


def test_input_the_workflow_refuses_names_the_case() -> None:
    typed = workflow("typed", input_schema=_Order).task("a", handler="noop").build()
    with pytest.raises(SimulationError, match="case 'bad': the workflow refused the input"):
        simulate(typed, [{"name": "bad", "input": {"order_id": 3}}])
    report = simulate(typed, [{"name": "good", "input": {"order_id": "o-1"}}])
    assert report.case("good").output == {"order_id": "o-1"}


@pytest.mark.parametrize("page", ["api.md", "simulation.md"])
def test_the_docs_examples_run_as_written(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # they name definitions/ and examples/ from the repository root
    text = (ROOT / "docs" / page).read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "simulate(" in b]
    assert blocks
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), {})


def test_expectations_are_checked() -> None:
    actions = {"submitExpense": SUBMITTED, "notifyCustomer": {"notified": True}}
    report = simulate(
        EXPENSE,
        [
            {"name": "met", "input": EXPENSE_IN, "actions": actions, "advance": "3d",
             "expect": {"status": "completed", "output": {"notified": True}}},
            {"name": "wrong status", "input": EXPENSE_IN, "actions": actions,
             "expect": "completed"},
            {"name": "wrong error", "input": EXPENSE_IN,
             "actions": {"submitExpense": {"raise": "no budget"}},
             "expect": {"status": "failed", "error": "over budget"}},
        ],
    )  # fmt: skip
    assert report.case("met").passed
    assert [c.name for c in report.failed_cases] == ["wrong status", "wrong error"]
    assert report.case("wrong status").unmet == ("expected status completed, got waiting",)
    assert report.case("wrong error").unmet == (
        "expected an error with 'over budget', got ActionFailed: no budget",
    )
    with pytest.raises(SimulationError, match=r"case 'x': expect: unknown key 'stauts'"):
        simulate(EXPENSE, [{"name": "x", "expect": {"stauts": "failed"}}])


def test_error_edges_told_apart_from_next_and_in_a_dag() -> None:
    shared = load_yaml(
        "id: shared\nsteps:\n"
        "  - {id: a, action: risky, onError: branch, errorBranch: b, next: b}\n"
        "  - {id: b, action: fix}\n"
    )
    report = simulate(
        shared,
        [
            {"name": "fails", "actions": {"risky": {"raise": "x"}, "fix": {"ok": 1}}},
            {"name": "works", "actions": {"risky": {"v": 1}, "fix": {"ok": 1}}},
        ],
    )
    assert {str(e) for e in report.case("fails").edges} == {"a -> b [error]", "b -> end [end]"}
    assert {str(e) for e in report.case("works").edges} == {"a -> b [next]", "b -> end [end]"}
    dag = load_yaml(
        "id: dag\nsteps:\n"
        "  - {id: a, action: one}\n"
        "  - {id: b, action: risky, dependsOn: [a], onError: branch, errorBranch: h}\n"
        "  - {id: h, action: fix}\n"
        "  - {id: c, action: one, dependsOn: [b]}\n"
    )
    actions = {"one": {"v": 1}, "risky": {"raise": "x"}, "fix": {"ok": 1}}
    report = simulate(dag, [{"name": "fails", "actions": actions}])
    case = report.case("fails")
    assert case.steps == ("a", "b", "h")
    assert {str(e) for e in case.edges} == {"a -> b [dependency]", "b -> h [error]"}
    assert report.coverage.uncovered_edges == [Edge("b", "c", "dependency")]
    assert report.coverage.unexercised_rules == []  # c's rule was decided: skipped
    assert {r.point.step: set(r.outcomes) for r in report.coverage.rules}["c"] == {
        "skipped: trigger_rule"
    }
