"""``engine.limit_action``: a limit per action, stored in the database, that every engine and
worker process obeys; a step over it waits durably and uses up no attempt."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, InputValidationError, StepContext, workflow
from statemachine.testing import ManualClock
from tests.integration.programs import worker_action_limits as program
from tests.integration.programs.worker_support import Proc, read_lines

from .conftest import START


@pytest.fixture
def engines(db_url: str) -> Iterator[list[Engine]]:
    """Engines on one database, closed at the end."""
    opened: list[Engine] = []
    yield opened
    for eng in opened:
        eng.close()
    gc.collect()


def _engine(db_url: str, engines: list[Engine], clock: ManualClock | None = None) -> Engine:
    eng = Engine(db_url, clock=clock)
    engines.append(eng)
    return eng


def _throttled(eng: Engine, calls: list[Any]) -> None:
    def send(data: Any, ctx: StepContext) -> dict[str, Any]:
        calls.append((ctx.instance_id, ctx.attempt))
        return {}

    eng.action("send")(send)
    eng.register(program.definition())


def test_a_step_over_the_rate_waits_with_its_wake_at_and_no_attempt_used(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    eng = _engine(db_url, engines, clock)
    calls: list[Any] = []
    _throttled(eng, calls)
    eng.limit_action("send", rate="2/s")
    ids = [eng.start(program.WORKFLOW, {}, instance_id=f"i{n}") for n in range(5)]
    eng.run_due()
    assert len(calls) == 2
    held = [eng.get(i) for i in ids if eng.get(i).status == "waiting"]
    assert len(held) == 3
    for inst in held:
        step = inst.step_results["call"]
        assert step.status == "waiting" and step.attempts == 0
        assert step.next_attempt_at == START + timedelta(seconds=1)
        assert inst.wake_at == START + timedelta(seconds=1)
    assert "workflow.step.throttled" in [h.type for h in eng.history(held[0].id)]
    eng.run_due()  # nothing is free before the window moves on
    assert len(calls) == 2
    clock.advance("1s")
    eng.run_due()
    assert len(calls) == 4
    clock.advance("1s")
    eng.run_due()
    assert {eng.get(i).status for i in ids} == {"completed"}
    assert {eng.get(i).step_results["call"].attempts for i in ids} == {1}
    assert {attempt for _, attempt in calls} == {1}


def test_the_limit_is_stored_and_a_new_engine_obeys_it(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    first = _engine(db_url, engines, clock)
    first.limit_action("send", rate="1/h")  # not registered anywhere yet: allowed
    first.close()
    later = _engine(db_url, engines, clock)  # a restart: the limit was kept
    calls: list[Any] = []
    _throttled(later, calls)
    ids = [later.start(program.WORKFLOW, {}) for _ in range(2)]
    later.run_due()
    assert len(calls) == 1
    clock.advance("30m")
    later.run_due()
    assert len(calls) == 1
    clock.advance("31m")
    later.run_due()
    assert len(calls) == 2 and {later.get(i).status for i in ids} == {"completed"}
    later.limit_action("send")  # no rate, no concurrency: the limit is gone
    assert later.store.action_limits() == {}


@pytest.mark.parametrize("bad", ["100", "0/s", "10/d", "x/m", "-1/s", "1.5/s", "", 5])
def test_a_bad_rate_is_refused_with_its_shape(db_url: str, engines: list[Engine], bad: Any) -> None:
    eng = _engine(db_url, engines)
    with pytest.raises(InputValidationError, match="'N/s', 'N/m' or 'N/h'"):
        eng.limit_action("send", rate=bad)
    assert eng.store.action_limits() == {}


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3", True])
def test_a_bad_concurrency_is_refused(db_url: str, engines: list[Engine], bad: Any) -> None:
    eng = _engine(db_url, engines)
    with pytest.raises(InputValidationError, match="concurrency"):
        eng.limit_action("send", concurrency=bad)
    assert eng.store.action_limits() == {}


def _workers(db_url: str, tmp_path: Path, count: int, hold: float) -> list[str]:
    log = tmp_path / "calls.log"
    procs = [
        Proc.program("worker_action_limits", [db_url, str(log), str(hold)], tmp_path, f"w{n}")
        for n in range(count)
    ]
    try:
        for proc in procs:
            assert proc.wait(240) == 0, proc.describe()
    finally:
        for proc in procs:
            proc.cleanup()
    return read_lines(log)


def test_a_rate_holds_over_every_window_across_three_processes(
    db_url: str, engines: list[Engine], tmp_path: Path
) -> None:
    parent = _engine(db_url, engines)
    parent.register(program.definition(), check_actions=False)
    parent.limit_action("send", rate="20/s")
    ids = [parent.start(program.WORKFLOW, {}) for _ in range(70)]
    starts = sorted(float(line.split()[2]) for line in _workers(db_url, tmp_path, 3, 0.0))
    assert len(starts) == 70  # each step ran once
    busiest = max(sum(1 for t in starts[i:] if t < s + 1.0) for i, s in enumerate(starts))
    assert busiest <= 21, busiest  # 20 in any second, +1 for the window's boundary
    assert starts[-1] - starts[0] >= 2.5  # 70 calls at 20/s take over 3 seconds
    for iid in ids:
        inst = parent.get(iid)
        assert inst.status == "completed" and inst.step_results["call"].attempts == 1


def test_concurrency_holds_across_two_processes(
    db_url: str, engines: list[Engine], tmp_path: Path
) -> None:
    parent = _engine(db_url, engines)
    parent.register(program.definition(), check_actions=False)
    parent.limit_action("send", concurrency=2)
    ids = [parent.start(program.WORKFLOW, {}) for _ in range(10)]
    moves = []
    for line in _workers(db_url, tmp_path, 2, 0.3):
        _, what, at = line.split()
        moves.append((float(at), 1 if what == "start" else -1))
    running = most = 0
    for _, step in sorted(moves):  # an end before a start at a tie
        running += step
        most = max(most, running)
    assert len(moves) == 20
    assert most == 2
    assert {parent.get(i).step_results["call"].attempts for i in ids} == {1}


def test_a_slot_held_by_a_dead_worker_is_free_once_its_lease_expired(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    eng = _engine(db_url, engines, clock)
    _throttled(eng, [])
    eng.limit_action("send", concurrency=1)
    store = eng.store
    for iid in ("dead", "next"):
        eng.start(program.WORKFLOW, {}, instance_id=iid)
    claimed = store.claim("dead", "gone-worker", clock.now(), clock.now() + timedelta(seconds=0.5))
    assert claimed is not None
    epoch = claimed[0]
    assert store.admit_call("send", "dead", "call", epoch, clock.now, 0.5) is None
    # the slot is taken: the next call waits, and asks again after the recheck interval
    assert store.admit_call("send", "next", "call", 1, clock.now, 0.5) == clock.now() + timedelta(
        seconds=0.5
    )
    clock.advance("1s")  # SQLite's lease time
    time.sleep(0.7)  # Postgres's: the database's own clock
    assert store.admit_call("send", "next", "call", 1, clock.now, 0.5) is None


def test_a_slot_is_free_again_when_the_call_ends(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    eng = _engine(db_url, engines, clock)
    calls: list[Any] = []
    _throttled(eng, calls)
    eng.register(workflow("twice").task("a", "send").task("b", "send").build())
    eng.limit_action("send", concurrency=1)
    iid = eng.start("twice", {})
    eng.run_due()  # b is admitted while the instance still holds its lease: a gave its slot back
    assert len(calls) == 2 and eng.get(iid).status == "completed"


def test_an_async_action_is_limited_too(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    eng = _engine(db_url, engines, clock)
    calls: list[str] = []

    async def send(data: Any, ctx: StepContext) -> dict[str, Any]:
        calls.append(ctx.instance_id)
        return {}

    eng.action("send")(send)
    eng.register(program.definition())
    eng.limit_action("send", rate="1/m")
    ids = [eng.start(program.WORKFLOW, {}) for _ in range(2)]
    eng.run_due()
    assert len(calls) == 1
    (held,) = [i for i in ids if eng.get(i).status == "waiting"]
    assert eng.get(held).step_results["call"].attempts == 0
    clock.advance("1m")
    eng.run_due()
    assert len(calls) == 2 and eng.get(held).step_results["call"].attempts == 1
