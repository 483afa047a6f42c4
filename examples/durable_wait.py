"""Onboarding with a 3-day wait that survives a restart: the second Engine finishes the job.

    python examples/durable_wait.py [DB_URL]

A ManualClock stands in for three real days; in production the worker wakes the instance when
``wake_at`` comes, whichever process that is.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.actions import ShopActions
from statemachine import Engine, load_yaml
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parent.parent


def open_engine(url: str, clock: ManualClock) -> Engine:
    engine = Engine(url, clock=clock)
    engine.register_actions(ShopActions())
    engine.register(load_yaml(ROOT / "definitions" / "onboarding.yaml"))
    return engine


def main(url: str | None = None) -> int:
    url = url or f"sqlite:///{tempfile.mkdtemp()}/onboarding.db"
    clock = ManualClock()
    first = open_engine(url, clock)
    inst = first.execute("onboarding", {"email": "ada@example.com", "name": "Ada"})
    print(f"day 0: {inst.status}, waiting at {inst.current_step!r} until {inst.wake_at}")
    first.close()  # the process goes away; the wait is a row in the database

    clock.advance("3d")
    second = open_engine(url, clock)
    print(f"day 3: a new engine ran {second.run_due()} instance(s)")
    inst = second.get(inst.id)
    print(f"{inst.id}: {inst.status}, steps: {', '.join(inst.step_results)}")
    second.close()
    return 0 if inst.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
