"""A poison instance is dead-lettered alone: its innocent neighbours are not.

30 innocent instances (steps of 1-3 s) and one whose handler ends the process with
``os._exit`` share a worker process (``programs/worker_poison.py``: concurrency 8, lease 2 s,
``max_recoveries=2``) that this test restarts every time it dies, as a supervisor would. The
first death takes down the neighbours whose steps were running with the poison's: each of them
becomes a suspect (a crash is counted only against an instance whose handler was running), and
a suspect runs alone, so only deaths while it runs alone are blamed on it. The poison is
dead-lettered after ``max_recoveries`` + 1 such deaths; every innocent completes, each neighbour
once more than the others.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from statemachine import Engine
from tests.integration.programs import worker_poison as wp
from tests.integration.programs.worker_support import Proc, read_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
]

INNOCENTS = 30
POISON_AT = 3  # started fourth: claimed in the worker's first batch, with neighbours


def test_a_poison_instance_is_dead_lettered_and_its_neighbours_complete(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    engine = Engine(db_url, settings=wp.SETTINGS)
    procs: list[Proc] = []
    try:
        wp.setup(engine, log)
        ids = []
        for n in range(INNOCENTS):
            if n == POISON_AT:
                engine.start(wp.WORKFLOW, {"poison": True, "seconds": 0}, instance_id=wp.POISON)
            ids.append(engine.start(wp.WORKFLOW, {"seconds": 1 + n % 3}, f"chores-{n}"))
        everyone = [*ids, wp.POISON]

        deaths = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the supervisor: restart the worker when it dies
            if not procs or not procs[-1].alive():
                if procs:
                    assert procs[-1].wait(timeout=5) == 1, procs[-1].describe()
                    deaths += 1
                procs.append(
                    Proc.program("worker_poison", [db_url, str(log)], tmp_path, f"w{len(procs)}")
                )
            if all(engine.get(i).is_terminal for i in everyone):
                break
            time.sleep(0.2)
        last = procs[-1]
        last.signal(signal.SIGTERM)
        assert last.wait(timeout=30) == 0, last.describe()

        poison = engine.get(wp.POISON)
        assert poison.status == "failed", (poison.status, deaths)
        assert poison.error is not None and poison.error["type"] == "DeadLettered"
        dead_lettered = [i for i in ids if engine.get(i).status == "failed"]
        assert dead_lettered == [], dead_lettered
        assert all(engine.get(i).status == "completed" for i in ids)

        runs = Counter(line.split("/")[0] for line in read_lines(log))
        # one death with neighbours (a crash: a suspect), then max_recoveries + 1 alone
        assert runs[wp.POISON] == deaths == wp.SETTINGS.max_recoveries + 2, (runs, deaths)
        rec = engine.store.get(wp.POISON)
        assert rec is not None and rec.recoveries == wp.SETTINGS.max_recoveries + 1
        neighbours = [i for i in ids if runs[i] > 1]
        assert 0 < len(neighbours) < wp.CONCURRENCY, runs  # killed once each, then run alone
        assert all(runs[i] == 2 for i in neighbours), runs
        for iid in ids:
            inner = engine.store.get(iid)
            assert inner is not None and inner.recoveries == 0
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()
