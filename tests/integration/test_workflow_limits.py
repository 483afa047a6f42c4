"""``register(d, max_concurrent=N)`` is stored with the workflow in the database: every engine
and worker process on that database obeys it, whether it registered with the limit or not."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, InputValidationError, workflow
from statemachine.testing import ManualClock
from tests.integration.programs import worker_limits
from tests.integration.programs.worker_support import Proc, read_lines


@pytest.fixture
def engines(db_url: str) -> Iterator[list[Engine]]:
    """Engines on one database, closed at the end; ``engines.append`` opens more."""
    opened: list[Engine] = []
    yield opened
    for eng in opened:
        eng.close()
    gc.collect()


class Peak:
    """Handlers running at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def hold(self, data: Any) -> dict[str, Any]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.2)
        with self.lock:
            self.now -= 1
        return {}


def test_a_limit_registered_by_one_engine_holds_for_another(
    db_url: str, engines: list[Engine]
) -> None:
    peak = Peak()
    definition = workflow("capped").task("hold", "hold").build()
    first = Engine(db_url)
    engines.append(first)
    first.register(definition, max_concurrent=2, check_actions=False)
    ids = [first.start("capped", {}) for _ in range(8)]

    second = Engine(db_url)  # registers without a limit: the stored one holds
    engines.append(second)
    second.action("hold")(peak.hold)
    second.register(definition)
    with second.worker(concurrency=8, poll_interval="20ms"):
        for iid in ids:
            assert second.wait(iid, timeout=120).status == "completed"
    assert peak.most <= 2
    assert peak.most >= 1


def test_the_last_register_with_a_limit_wins_and_one_without_keeps_it(
    db_url: str, engines: list[Engine]
) -> None:
    clock = ManualClock()
    definition = workflow("pair").task("x", lambda x: 1).wait("w", duration="1h").build()
    a, b, c = (Engine(db_url, clock=clock) for _ in range(3))
    engines.extend([a, b, c])
    a.register(definition, max_concurrent=2)
    b.register(definition, max_concurrent=3)  # the last writer wins, for every engine
    c.register(definition)  # no limit given: the stored one stays
    assert c.registry.max_concurrent("pair") == 3

    ids = [a.start("pair", {}) for _ in range(5)]
    a.run_due()  # a registered 2, but takes slots by the stored 3
    assert Counter(a.get(i).status for i in ids) == Counter({"waiting": 3, "pending": 2})

    d = Engine(db_url, clock=clock)  # a new process, later: the limit was kept durably
    engines.append(d)
    d.register(definition)
    assert d.registry.max_concurrent("pair") == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_limit_must_be_a_whole_number_of_at_least_one(
    engines: list[Engine], db_url: str, bad: Any
) -> None:
    eng = Engine(db_url)
    engines.append(eng)
    with pytest.raises(InputValidationError, match="max_concurrent"):
        eng.register(workflow("w").task("a", lambda x: x).build(), max_concurrent=bad)
    assert eng.store.max_concurrent() == {}


def test_worker_processes_obey_a_limit_they_were_not_given(
    db_url: str, engines: list[Engine], tmp_path: Path
) -> None:
    log = tmp_path / "holds.log"
    parent = Engine(db_url)
    engines.append(parent)
    parent.register(worker_limits.definition(), max_concurrent=2, check_actions=False)
    ids = [parent.start(worker_limits.WORKFLOW, {}) for _ in range(8)]
    procs = [
        Proc.program("worker_limits", [db_url, str(log)], tmp_path, f"worker{n}") for n in range(2)
    ]
    try:
        for proc in procs:
            assert proc.wait(180) == 0, proc.describe()
    finally:
        for proc in procs:
            proc.cleanup()
    assert {parent.get(i).status for i in ids} == {"completed"}
    moves = []
    for line in read_lines(log):
        _, what, at = line.split()
        moves.append((float(at), 1 if what == "start" else -1))
    running = most = 0
    for _, step in sorted(moves, key=lambda m: (m[0], m[1])):  # an end before a start at a tie
        running += step
        most = max(most, running)
    assert len(moves) == 16
    assert most <= 2
