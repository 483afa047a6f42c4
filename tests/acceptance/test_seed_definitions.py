"""workflow.do's own examples (../shared/seeds), typed into YAML as written, load and behave as
their document says: `id` + `name`, `maxRetries`, retry from the failed step, conditions that
skip, a 3-day wait, triggers with conditions, and an error branch taken only on failure."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, load_definitions
from statemachine.testing import ManualClock

SEEDS = Path(__file__).parent / "seeds"


class Actions:
    """Every action the seeds name; `broken` makes an action raise, `calls` counts."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.broken: dict[str, int] = {}  # action -> failures left
        self.risk = 0.1

    def _run(self, name: str, out: Any) -> Any:
        self.calls[name] += 1
        if self.broken.get(name, 0) > 0:
            self.broken[name] -= 1
            raise RuntimeError(f"{name} failed")
        return out

    def validatePayment(self, data: Any) -> Any:
        return self._run("validatePayment", {"total": 42, "paymentMethod": "card"})

    def reserveInventory(self, data: Any) -> Any:
        return self._run("reserveInventory", {"reserved": True})

    def chargeCard(self, data: Any) -> Any:
        return self._run("chargeCard", {"charged": 42})

    def fulfillOrder(self, data: Any) -> Any:
        return self._run("fulfillOrder", {"shipped": True})

    def sendConfirmation(self, data: Any) -> Any:
        return self._run("sendConfirmation", {"sent": True})

    def calculateFraudScore(self, data: Any) -> Any:
        return self._run("calculateFraudScore", {"risk": self.risk})

    def approveOrder(self, data: Any) -> Any:
        return self._run("approveOrder", {"approved": True})

    def queueForReview(self, data: Any) -> Any:
        return self._run("queueForReview", {"queued": True})

    def sendWelcomeEmail(self, data: Any) -> Any:
        return self._run("sendWelcomeEmail", {"welcome": True})

    def sendOnboardingTips(self, data: Any) -> Any:
        return self._run("sendOnboardingTips", {"tips": True})

    def greetCustomer(self, data: Any) -> Any:
        return self._run("greetCustomer", data)

    def callExternalApi(self, data: Any) -> Any:
        return self._run("callExternalApi", {"called": True})

    def handleFailure(self, data: Any) -> Any:
        return self._run("handleFailure", {"handled": True})

    def alertAdmin(self, data: Any) -> Any:
        return self._run("alertAdmin", {"paged": True})


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    clock = ManualClock()
    engine = Engine(f"sqlite:///{tmp_path}/seeds.db", clock=clock)
    actions = Actions()
    engine.register_actions(actions)
    engine.register(load_definitions(SEEDS))
    yield engine, actions, clock
    engine.close()


def test_every_seed_loads_as_written() -> None:
    names = {d.name: d for d in load_definitions(SEEDS)}
    assert set(names) == {p.stem for p in SEEDS.glob("*.yaml")}
    assert names["order-processing"].title == "Process Customer Order"
    charge = names["order-processing"].step_index()["charge"]
    assert charge.retry is not None and charge.retry.max_attempts == 4  # maxRetries: 3 retries


def test_order_processing_retries_from_the_failed_step(setup: Any) -> None:
    engine, actions, clock = setup
    actions.broken["chargeCard"] = 10  # declined whatever the retries
    inst = engine.execute("order-processing", {"orderId": "ord_123", "customerId": "cus_456"})
    for _ in range(3):  # the backoffs of the three retries
        clock.advance("1m")
        engine.run_due()
    failed = engine.get(inst.id)
    assert failed.status == "failed"
    assert failed.step_results["charge"].attempts == 4
    assert [s for s, r in failed.step_results.items() if r.status == "completed"] == [
        "validate",
        "reserve",
    ]
    actions.broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    done = engine.get(inst.id)
    assert done.status == "completed"
    assert actions.calls["validatePayment"] == 1 and actions.calls["reserveInventory"] == 1


@pytest.mark.parametrize(("risk", "taken", "skipped"), [(0.1, "auto-approve", "manual-review"),
                                                        (0.7, "manual-review", "auto-approve")])  # fmt: skip
def test_fraud_check_takes_one_branch(setup: Any, risk: float, taken: str, skipped: str) -> None:
    engine, actions, _ = setup
    actions.risk = risk
    inst = engine.execute("fraud-check", {})
    assert inst.status == "completed"
    assert inst.step_results[taken].status == "completed"
    assert inst.step_results[skipped].status == "skipped"
    reason = inst.step_results[skipped].reason
    assert reason is not None and reason["kind"] == "condition"


def test_onboarding_waits_three_days(setup: Any) -> None:
    engine, actions, clock = setup
    inst = engine.execute("onboarding", {"email": "ada@example.com"})
    assert inst.status == "waiting" and actions.calls["sendOnboardingTips"] == 0
    clock.advance("2d")
    engine.run_due()
    assert engine.get(inst.id).status == "waiting"
    clock.advance("1d")
    engine.run_due()
    assert engine.get(inst.id).status == "completed"
    assert actions.calls["sendOnboardingTips"] == 1


def test_customer_lifecycle_starts_on_its_triggers(setup: Any) -> None:
    engine, _actions, _ = setup
    (created,) = engine.emit("Customer.created", {"id": "cus_123"})
    assert engine.emit("Customer.upgraded", {"id": "cus_1", "plan": "pro"}) == []
    (upgraded,) = engine.emit("Customer.upgraded", {"id": "cus_2", "plan": "enterprise"})
    engine.run_due()
    assert engine.get(created).output == {"customer": "cus_123"}  # the step read `event`
    assert engine.get(upgraded).status == "completed"


@pytest.mark.parametrize("fallback_fails", [False, True])
def test_resilient_workflow(setup: Any, fallback_fails: bool) -> None:
    engine, actions, clock = setup
    actions.broken["callExternalApi"] = 2  # two failures, then the third try works
    if fallback_fails:
        actions.broken["handleFailure"] = 1
    inst = engine.execute("resilient-workflow", {})
    for _ in range(3):
        clock.advance("5m")
        engine.run_due()
    done = engine.get(inst.id)
    assert done.status == "completed"
    assert actions.calls["callExternalApi"] == 3
    assert actions.calls["alertAdmin"] == (1 if fallback_fails else 0)
