"""``engine.limit_action``: a limit per action, stored in the database, that every engine and
worker process obeys; a step over it waits durably and uses up no attempt."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from statemachine import CriticalError, Engine, InputValidationError, StepContext, workflow
from statemachine.engine import limits
from statemachine.runtime.paths import compensation_path
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


def _throttles(eng: Engine, iid: str) -> int:
    return [h.type for h in eng.history(iid)].count("workflow.step.throttled")


def test_a_step_held_by_a_slot_writes_one_history_entry_while_it_waits(
    db_url: str, engines: list[Engine]
) -> None:
    """The slot is rechecked every ``SLOT_RECHECK`` seconds; history says once that the step
    waits, and the wait stays durable (waiting, ``wake_at`` set, no attempt used)."""
    eng = _engine(db_url, engines)
    entered, release = threading.Event(), threading.Event()

    def send(data: Any, ctx: StepContext) -> dict[str, Any]:
        if ctx.instance_id == "first":
            entered.set()
            release.wait(60)
        return {}

    eng.action("send")(send)
    eng.register(program.definition())
    eng.limit_action("send", concurrency=1)
    with eng.worker(concurrency=2, poll_interval="50ms"):
        eng.start(program.WORKFLOW, {}, instance_id="first")
        assert entered.wait(60)  # its call holds the one slot
        eng.start(program.WORKFLOW, {}, instance_id="next")
        time.sleep(4 * limits.SLOT_RECHECK)  # a few rechecks at the least
        _until(lambda: _throttles(eng, "next") >= 1)
        time.sleep(6 * limits.SLOT_RECHECK)  # as many as 6 more rechecks of the full slot

        def held_back() -> bool:  # read between rechecks: a recheck runs the step for an instant
            held = eng.get("next")
            step = held.step_results["call"]
            return (
                held.status == "waiting"
                and held.wake_at is not None
                and step.status == "waiting"
                and step.attempts == 0
                and step.next_attempt_at is not None
            )

        _until(held_back)
        release.set()
        _until(lambda: eng.get("next").status == "completed")
    assert _throttles(eng, "next") == 1
    assert eng.get("next").step_results["call"].attempts == 1


def test_a_step_held_over_several_windows_writes_one_entry_per_call_held_back(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    eng = _engine(db_url, engines, clock)
    calls: list[Any] = []
    _throttled(eng, calls)
    eng.limit_action("send", rate="1/m")
    ids = [eng.start(program.WORKFLOW, {}, instance_id=f"i{n}") for n in range(3)]
    for _ in range(3):
        eng.run_due()
        clock.advance("1m")
    eng.run_due()
    assert [eng.get(i).status for i in ids] == ["completed"] * 3
    assert [_throttles(eng, i) for i in ids] == [0, 1, 1]  # i2 was held back twice: one entry


def _until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_compensation_calling_a_limited_action_waits_like_a_step(
    db_url: str, engines: list[Engine], clock: ManualClock
) -> None:
    """Limits hold for every call of the action, an undo included: a compensation over the
    limit waits durably with no attempt used, then runs when the window moves on."""
    eng = _engine(db_url, engines, clock)
    undone: list[str] = []

    def unbook(data: Any, ctx: StepContext) -> None:
        undone.append(ctx.instance_id)

    def charge() -> None:
        raise CriticalError("card refused")

    eng.action("book")(lambda: {"room": 1})
    eng.action("unbook")(unbook)
    eng.action("charge")(charge)
    eng.register(
        workflow("trip").task("book", "book", compensate="unbook").task("pay", "charge").build()
    )
    eng.limit_action("unbook", rate="1/m")
    ids = [eng.start("trip", {}, instance_id=f"t{n}") for n in range(2)]
    eng.run_due()
    assert len(undone) == 1
    (held,) = [i for i in ids if i not in undone]
    inst = eng.get(held)
    undo = inst.step_results[compensation_path("book")]
    assert inst.status == "compensating" and inst.wake_at == START + timedelta(minutes=1)
    assert undo.status == "waiting" and undo.attempts == 0
    assert _throttles(eng, held) == 1
    clock.advance("1m")
    eng.run_due()
    assert undone == [i for i in ids if i != held] + [held]
    assert eng.get(held).status == "failed"
    assert eng.get(held).step_results["book"].status == "compensated"
    assert eng.get(held).step_results[compensation_path("book")].attempts == 1
