"""Every runnable example and every definition runs, as a user would run them.

Both are found by glob, not listed: a new script in ``examples/`` or a new file in
``definitions/`` is run without touching this file, and a definition must come with cases that
reach every one of its steps (see ``CASES``), so a branch no input can take shows up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from examples.actions import ShopActions
from statemachine import Engine, WorkflowInstance, load_definitions, load_yaml
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = sorted((ROOT / "definitions").glob("*.yaml"))
TWINS = {p.stem.replace("-", "_") for p in DEFINITIONS}  # builder twins print a graph, not a run
SCRIPTS = sorted(
    p.name
    for p in (ROOT / "examples").glob("*.py")
    if p.stem not in TWINS | {"__init__", "actions"}
)
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/example.db"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), db],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed" in proc.stdout


def test_the_scripts_are_found() -> None:
    assert {"quickstart.py", "durable_wait.py", "saga_and_children.py"} <= set(SCRIPTS)


def test_readme_main_command_uses_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command runs quickstart with no URL: ./statemachine.db in the cwd."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "statemachine.db").exists()


@dataclass(frozen=True)
class Case:
    """One run of a definition with ``examples.actions.ShopActions``, and what it must do."""

    name: str
    input: Any
    steps: dict[str, str]  # every step's status at the end (map items' own rows left out)
    status: str | None = "completed"  # None: nothing may start (a trigger that does not match)
    send: tuple[tuple[str, Any], ...] = ()  # events sent to the instance once it started
    emit: str | None = None  # start by this event (the workflow's trigger) instead of by name
    output: Any = None  # the instance's output, when given
    completions: dict[str, int] = field(default_factory=dict)  # step -> times completed


DONE = "completed"
ORDER = {"order_id": "o-1", "items": ["book", "pen"], "amount": 42, "email": "ada@example.com"}
CUSTOMER = {"email": "ada@example.com", "name": "Ada", "plan": "free"}

CASES: dict[str, list[Case]] = {
    "account-opening": [
        Case("kyc child", {"email": "ada@example.com"},
             {"create-account": DONE, "verify": DONE, "welcome": DONE}),
    ],
    "batch-job": [
        Case("done on the third check", {"dataset": "sales"},
             {"submit": DONE, "wait-for-job": DONE, "report": DONE},
             output={"reported": {"result": {"rows": 1200}}}),
    ],
    "customer-lifecycle": [
        Case("created", CUSTOMER, dict.fromkeys(
            ["create-crm-record", "greet", "assign-account-manager"], DONE),
             emit="Customer.created"),
        Case("upgraded to enterprise", {**CUSTOMER, "plan": "enterprise"}, dict.fromkeys(
            ["create-crm-record", "greet", "assign-account-manager"], DONE),
             emit="Customer.upgraded"),
        Case("upgraded to pro: the trigger's condition is false", {**CUSTOMER, "plan": "pro"},
             {}, status=None, emit="Customer.upgraded"),
    ],
    "expense-approval": [
        Case("approved", {"amount": 80}, {"submit": DONE, "decision": DONE, "route": DONE,
                                          "pay": DONE}, send=(("managerDecision", {"approved": True}),)),
        Case("rejected", {"amount": 80}, {"submit": DONE, "decision": DONE, "route": DONE,
                                          "reject": DONE}, send=(("managerDecision", {"approved": False}),)),
        Case("no decision in 3 days", {"amount": 80},
             {"submit": DONE, "decision": "failed", "escalate": DONE}),
    ],
    "fraud-check": [
        Case("low risk", {"payment_id": "p-1", "amount": 12},
             {"score": DONE, "auto-approve": DONE, "manual-review": "skipped", "notify": DONE}),
        Case("high risk", {"payment_id": "p-2", "amount": 5000},
             {"score": DONE, "auto-approve": "skipped", "manual-review": DONE, "notify": DONE}),
    ],
    "kyc-check": [
        Case("both checks", {"email": "ada@example.com"},
             {"checks": DONE, "checks/identity/verify-identity": DONE,
              "checks/sanctions/screen-sanctions": DONE}),
    ],
    "newsletter": [
        Case("two recipients", {"recipients": ["a@example.com", "b@example.com"]},
             {"send-all": DONE, "send-all/recipient/send": DONE, "report": DONE},
             output={"reported": [{"sent": True, "template": "newsletter"}] * 2}),
    ],
    "onboarding": [
        Case("tips three days later", {"email": "ada@example.com"},
             {"welcome": DONE, "wait-3-days": DONE, "tips": DONE}),
    ],
    "order-processing": [
        Case("shipped", ORDER, dict.fromkeys(
            ["validate", "reserve", "charge", "fulfill", "notify"], DONE)),
        Case("card declined: not retried", {**ORDER, "amount": 20_000},
             {"validate": DONE, "reserve": DONE, "charge": "failed"}, status="failed"),
    ],
    "process-order-state-machine": [
        Case("in stock", ORDER, dict.fromkeys(
            ["validate", "check-stock", "fulfill", "fulfill/shipping/ship",
             "fulfill/notification/notify", "complete"], DONE)),
        Case("sold out", {**ORDER, "items": ["globe"]}, dict.fromkeys(
            ["validate", "check-stock", "backorder", "complete"], DONE)),
    ],
    "retry-loop": [
        Case("three pages", {"url": "https://api.example.com/items"},
             {"fetch": DONE, "process": DONE, "more-pages": DONE},
             output={"processed": 3}, completions={"fetch": 3, "process": 3}),
    ],
    "trip-booking": [
        Case("booked", {"city": "Oslo", "amount": 900},
             {"book-hotel": DONE, "book-flight": DONE, "charge": DONE}),
        Case("declined: bookings undone", {"city": "Oslo", "amount": 20_000},
             {"book-hotel": "compensated", "book-flight": "compensated", "charge": "failed",
              "book-flight#compensate": DONE, "book-hotel#compensate": DONE}, status="failed"),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, ManualClock]]:
    """One engine for every case (account-opening needs kyc-check registered beside it)."""
    clock = ManualClock()
    engine = Engine(f"sqlite:///{tmp_path_factory.mktemp('definitions')}/run.db", clock=clock)
    engine.register_actions(ShopActions())
    engine.register(load_definitions(ROOT / "definitions"))
    yield engine, clock
    engine.close()


def drive(engine: Engine, clock: ManualClock, iid: str) -> WorkflowInstance:
    """Run an instance to its end, moving the clock to each timer (waits, polls, timeouts)."""
    for _ in range(200):
        inst = engine.get(iid)
        if inst.status in TERMINAL:
            return inst
        if inst.wake_at is not None and inst.wake_at > clock.now():
            clock.set(inst.wake_at)
        engine.run_due()
    raise AssertionError(f"{iid} did not finish: {engine.get(iid).status}")


def run_case(engine: Engine, clock: ManualClock, workflow: str, case: Case) -> None:
    if case.emit is not None:
        started = engine.emit(case.emit, case.input)
        assert len(started) == (0 if case.status is None else 1), case.name
        if not started:
            return
        iid = started[0]
    else:
        iid = engine.start(workflow, case.input)
    for event, data in case.send:
        engine.send_event(iid, event, data)
    inst = drive(engine, clock, iid)
    assert inst.workflow_name == workflow
    statuses = {path: r.status for path, r in inst.step_results.items() if "@" not in path}
    assert (inst.status, statuses) == (case.status, case.steps), (case.name, inst.error)
    if case.output is not None:
        assert inst.output == case.output, case.name
    if case.completions:
        done = Counter(h.step for h in engine.history(iid) if h.type == "workflow.step.completed")
        assert {s: done[s] for s in case.completions} == case.completions, case.name


@pytest.mark.parametrize("yaml_file", DEFINITIONS, ids=lambda p: p.stem)
def test_definition_runs_down_every_branch(
    yaml_file: Path, shop: tuple[Engine, ManualClock]
) -> None:
    engine, clock = shop
    definition = load_yaml(yaml_file)
    cases = CASES.get(definition.name)
    assert cases, f"{yaml_file.name} has no cases in {Path(__file__).name}: add inputs for it"
    for case in cases:
        run_case(engine, clock, definition.name, case)
    # between them, the cases complete every step of the graph: no branch is out of reach
    completed = {p for case in cases for p, s in case.steps.items() if s == DONE}
    assert {path for path, _ in definition.walk()} - completed == set()


def test_the_testing_example_of_the_api_reference_runs(tmp_path: Path) -> None:
    """docs/api.md's ManualClock example is run as written (with its tmp_path)."""
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ManualClock()" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/api.md", "exec"), {"tmp_path": tmp_path})
