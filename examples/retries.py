"""A flaky payment provider: retried with exponential backoff, then a CriticalError that is not.

python examples/retries.py [DB_URL]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statemachine import CriticalError, Engine, RetryPolicy, StepContext, workflow
from statemachine.testing import ManualClock


def charge(order: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    if order.get("card") == "stolen":
        raise CriticalError("card reported stolen")  # never retried
    if ctx.attempt < 3:
        raise ConnectionError(f"provider timeout (attempt {ctx.attempt})")
    return {"charged": order["amount"], "key": ctx.idempotency_key}


def build() -> Any:
    return (
        workflow("charge-with-retries")
        .task("charge", charge, retry=RetryPolicy(max_attempts=5, interval="2s", backoff_rate=2))
        .task("receipt", lambda charged: {"receipt": f"paid {charged['charged']}"})
        .build()
    )


def main(url: str | None = None) -> int:
    clock = ManualClock()
    engine = Engine(url or f"sqlite:///{tempfile.mkdtemp()}/retries.db", clock=clock)
    engine.register(build())
    engine.on(
        "workflow.step.retry",
        lambda ev: print(f"  retry after {ev['delay']}s: {ev['error']['message']}"),
    )
    inst = engine.execute("charge-with-retries", {"amount": 30, "card": "ok"})
    while inst.status == "waiting":
        clock.advance((inst.wake_at - clock.now()) if inst.wake_at else "1s")
        engine.run_due()
        inst = engine.get(inst.id)
    print(
        f"ok card: {inst.status} after {inst.step_results['charge'].attempts} attempts -> {inst.output}"
    )
    bad = engine.execute("charge-with-retries", {"amount": 30, "card": "stolen"})
    print(
        f"stolen card: {bad.status} after {bad.step_results['charge'].attempts} attempt: {bad.error['message']}"
    )
    engine.close()
    return 0 if inst.status == "completed" and bad.status == "failed" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
