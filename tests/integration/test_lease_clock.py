"""Whether a lease has run out is decided by the database's clock, not by each worker's.

Engine A (the machine's clock) runs 10 instances whose step takes 3 s, under a 2 s lease kept by
heartbeats. Engine B's clock runs 40 s ahead (timers only: a clock is the engine's port for
time). B polls the same database all the while: by its own clock every lease of A's has run out,
but on Postgres leases are set and compared with the database's now(), so B takes over nothing
and no step runs twice. SQLite has no clock of its own: every engine on one file shares the
machine's clock, and the engine's clock stands in (so a ManualClock still expires leases).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from statemachine import Engine, StepContext, workflow
from statemachine.runtime.clock import SystemClock

COUNT = 10
SKEW = timedelta(seconds=40)


class AheadClock(SystemClock):
    """The machine's clock, 40 s ahead: a worker whose clock is wrong."""

    def now(self) -> datetime:
        return super().now() + SKEW


def test_a_worker_whose_clock_runs_ahead_takes_over_no_live_instance(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite has no clock of its own: engines on one file share the machine's")
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def slow(data: Any, ctx: StepContext) -> Any:
        with lock:
            runs[ctx.instance_id] += 1
        time.sleep(3)
        return data

    a = Engine(db_url, worker_id="A", lease="2s")
    b = Engine(db_url, worker_id="B", lease="2s", clock=AheadClock())
    try:
        for engine in (a, b):
            engine.action("slow")(slow)
            engine.register(workflow("skewed").task("s", "slow").build())
        ids = [a.start("skewed", {"n": n}, f"skewed-{n}") for n in range(COUNT)]
        taken = 0
        with a.worker(concurrency=COUNT, poll_interval="50ms"):
            deadline = time.monotonic() + 20
            while len(runs) < COUNT and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(runs) == COUNT, runs
            while any(not a.get(i).is_terminal for i in ids) and time.monotonic() < deadline:
                taken += b.run_due()  # every lease of A's has run out, by B's clock
                time.sleep(0.1)
            for iid in ids:
                assert a.wait(iid, timeout=20).status == "completed"
        assert taken == 0
        assert runs == Counter(dict.fromkeys(ids, 1))  # no step ran a second time
        for iid in ids:
            rec = a.store.get(iid)
            assert rec is not None and rec.recoveries == 0 and rec.lease_epoch == 1
    finally:
        a.close()
        b.close()
        gc.collect()
