"""``statemachine simulate`` in a real subprocess, as CI runs it: every workflow in definitions/
with its cases file in examples/cases/ reaches every edge; exit codes; no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "definitions"
CASES = ROOT / "examples" / "cases"
WORKFLOWS = sorted(p.stem for p in DEFINITIONS.glob("*.yaml"))


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemachine", "simulate", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_every_definition_has_a_cases_file() -> None:
    assert WORKFLOWS
    assert sorted(p.stem for p in CASES.glob("*.yaml")) == WORKFLOWS


@pytest.mark.parametrize("name", WORKFLOWS)
def test_each_definition_reaches_every_edge(name: str) -> None:
    result = run(
        f"definitions/{name}.yaml",
        "--cases",
        f"examples/cases/{name}.yaml",
        "--min-coverage",
        "100",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every step, edge and trigger rule was reached." in result.stdout
    assert "Traceback" not in result.stderr


def test_json_report() -> None:
    result = run(
        "definitions/fraud-check.yaml", "--cases", "examples/cases/fraud-check.yaml", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["workflow"] == "fraud-check"
    assert [c["status"] for c in report["cases"]] == ["completed", "completed"]
    assert report["coverage"]["edges"]["percent"] == 100.0
    rules = {r["step"]: r["outcomes"] for r in report["coverage"]["trigger_rules"]["all"]}
    assert rules["notify"] == ["ran"]
    assert rules["manual-review"] == ["ran", "skipped: condition"]


def test_below_min_coverage_exits_1_and_names_what_is_missing(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- name: in stock\n"
        "  input: {order_id: o-1, items: [book], amount: 12, email: a@b.c}\n"
        "  actions:\n"
        "    validateOrder: {order_id: o-1, valid: true, in_stock: true}\n"
        "    shipOrder: {tracking: TRK-1, carrier: post}\n"
        "    notifyCustomer: {notified: true}\n"
    )
    definition = DEFINITIONS / "process-order-state-machine.yaml"
    result = run(definition, "--cases", cases, "--min-coverage", "90")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "edge check-stock -> backorder [default]" in result.stdout
    assert "step backorder" in result.stdout
    assert "edge coverage 80% is below --min-coverage 90%" in result.stderr
    assert run(definition, "--cases", cases, "--min-coverage", "80").returncode == 0
    assert run(definition, "--cases", cases).returncode == 0  # no bar: a report only


def test_an_unmet_expectation_exits_1(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- name: approved\n"
        "  input: {amount: 120}\n"
        "  expect: {status: completed, output: {paid: true}}\n"
        "  actions:\n"
        "    submitExpense: {expense_id: exp-1, amount: 120}\n"
        "    notifyCustomer: {notified: true}\n"
        "  advance: 3d\n"
    )
    result = run(DEFINITIONS / "expense-approval.yaml", "--cases", cases)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "case 'approved': expected output {'paid': True}, got {'notified': True}" in result.stderr
    )
    assert "not as expected" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- {name: typo, actions: {submitExpens: {x: 1}}}",
            "case 'typo': action 'submitExpens' is not used by workflow 'expense-approval' "
            "(did you mean 'submitExpense'?)",
        ),
        (
            "- {name: ev, events: [{name: managerDecison}]}",
            "(did you mean 'managerDecision'?)",
        ),
        ("- {name: slow, advance: 3 days}", "case 'slow': advance: '3 days' is not a duration"),
        (
            "- {name: partial, input: {amount: 120},"
            " actions: {submitExpense: {expense_id: exp-1, amount: 120}},"
            " events: [{name: managerDecision, data: {approved: false}}]}",
            "case 'partial': the run reached action 'notifyCustomer', which the case does not mock",
        ),
        ("cases: [", "not valid YAML"),
    ],
)
def test_bad_cases_exit_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(text + "\n")
    result = run(DEFINITIONS / "expense-approval.yaml", "--cases", cases)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_folder_picks_the_workflow_the_cases_file_is_named_after(tmp_path: Path) -> None:
    result = run("definitions", "--cases", "examples/cases/account-opening.yaml", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workflow"] == "account-opening"
    renamed = tmp_path / "mine.yaml"
    renamed.write_text((CASES / "kyc-check.yaml").read_text())
    result = run("definitions", "--cases", renamed)
    assert result.returncode == 2
    assert "say which to simulate with --workflow" in result.stderr
    result = run("definitions", "--cases", renamed, "--workflow", "kyc-check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workflow"] == "kyc-check"
    result = run("definitions", "--cases", renamed, "--workflow", "kyc-chek")
    assert result.returncode == 2
    assert "(did you mean 'kyc-check'?)" in result.stderr


def test_a_child_is_found_beside_the_parent(tmp_path: Path) -> None:
    # account-opening's kyc-check child comes from definitions/, not from the command line
    result = run(
        "definitions/account-opening.yaml", "--cases", "examples/cases/account-opening.yaml"
    )
    assert result.returncode == 0, result.stderr
    alone = tmp_path / "account-opening.yaml"
    alone.write_text((DEFINITIONS / "account-opening.yaml").read_text())
    result = run(alone, "--cases", CASES / "account-opening.yaml")
    assert result.returncode == 2
    assert "starts workflow 'kyc-check': pass its definition" in result.stderr
