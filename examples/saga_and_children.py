"""Saga, subworkflow, map and an approval event, from the YAML in definitions/.

python examples/saga_and_children.py [DB_URL]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.actions import ShopActions
from statemachine import Engine, load_definitions
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parent.parent


def main(url: str | None = None) -> int:
    clock = ManualClock()
    engine = Engine(url or f"sqlite:///{tempfile.mkdtemp()}/flows.db", clock=clock)
    actions = ShopActions()
    engine.register_actions(actions)
    engine.register(load_definitions(ROOT / "definitions"))

    trip = engine.execute("trip-booking", {"city": "Lisbon", "amount": 25_000})
    undone = [s for s in trip.step_results if s.endswith("#compensate")]
    print(
        f"trip-booking: {trip.status} ({trip.error['message'] if trip.error else ''}); undone: {undone}"
    )

    account = engine.execute("account-opening", {"email": "ada@example.com"})
    child = engine.list(workflow="kyc-check")[0]
    print(
        f"account-opening: {account.status}; child {child.id} {child.status}: {account.step_results['verify'].output}"
    )

    news = engine.execute("newsletter", {"recipients": ["a@x.io", "b@x.io", "c@x.io"]})
    print(
        f"newsletter: {news.status}; sent {len(news.step_results['send-all'].output)} emails in order"
    )

    expense = engine.execute("expense-approval", {"amount": 120})
    engine.send_event(expense.id, "managerDecision", {"approved": True})
    engine.run_due()
    expense = engine.get(expense.id)
    print(
        f"expense-approval: {expense.status} via {expense.current_step or 'pay'} -> {expense.output}"
    )
    engine.close()
    ok = (
        trip.status == "failed"
        and len(undone) == 2
        and account.status == news.status == expense.status
    )
    return 0 if ok and account.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
