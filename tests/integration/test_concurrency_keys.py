"""Concurrency per key and priorities (API.md section 9), on one process with a ManualClock:
instances over their key's limit wait ``pending`` and start by priority, then by creation,
as running ones end; the limit is stored and holds for another engine."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from statemachine import Engine, InputValidationError, workflow
from statemachine.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    eng = Engine(db_url, clock=clock)
    yield eng
    eng.close()
    gc.collect()


def _held(name: str, limit: int, key: str | None = None, priority: int = 0) -> Any:
    """A workflow whose instances hold their slot an hour (a wait), logging when they start."""
    return (
        workflow(name)
        .concurrency(limit, key=key)
        .priority(priority)
        .task("begin", "begin")
        .wait("hold", duration="1h")
        .build()
    )


def _starts(engine: Engine) -> list[str]:
    order: list[str] = []
    engine.action("begin")(lambda data: order.append(data["name"]) or {})
    return order


def test_priorities_order_the_slots(engine: Engine, clock: ManualClock) -> None:
    order = _starts(engine)
    engine.register(_held("jobs", 2, priority=1))
    ranks = {"a": None, "b": 5, "c": None, "d": 9, "e": 5, "f": -3}
    for name, rank in ranks.items():
        engine.start("jobs", {"name": name}, instance_id=name, priority=rank)
        clock.advance(timedelta(seconds=1))  # later due time: later in line among equals
    engine.run_due()
    assert order == ["d", "b"]
    assert {n: engine.get(n).status for n in ranks} == {
        "a": "pending", "b": "waiting", "c": "pending", "d": "waiting", "e": "pending",
        "f": "pending",
    }  # fmt: skip
    for _ in range(3):
        clock.advance(timedelta(hours=1, seconds=1))
        engine.run_due()
    # then e (5), then a and c (the definition's 1, in creation order), f (-3) last
    assert order == ["d", "b", "e", "a", "c", "f"]


def test_instances_over_their_key_limit_wait_pending(engine: Engine, clock: ManualClock) -> None:
    order = _starts(engine)
    engine.register(_held("orders", 1, key="${{ input.customer }}"))
    for name, customer in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b")]:
        engine.start("orders", {"name": name, "customer": customer}, instance_id=name)
        clock.advance(timedelta(seconds=1))
    engine.run_due()
    assert order == ["a1", "b1"]
    assert engine.get("a2").status == "pending" and engine.get("b2").status == "pending"
    clock.advance(timedelta(hours=2))
    engine.run_due()
    assert order == ["a1", "b1", "a2", "b2"]
    assert engine.get("a1").status == "completed" and engine.get("a3").status == "pending"
    clock.advance(timedelta(hours=2))
    engine.run_due()
    assert order == ["a1", "b1", "a2", "b2", "a3"]


def test_the_key_limit_is_stored_for_another_engine(
    engine: Engine, db_url: str, clock: ManualClock
) -> None:
    engine.register(_held("orders", 1, key="input.customer"), check_actions=False)
    ids = [engine.start("orders", {"name": str(n), "customer": "c"}) for n in range(3)]
    other = Engine(db_url, clock=clock)  # another process, its own registration
    try:
        order = _starts(other)
        other.register(_held("orders", 1, key="input.customer"))
        other.run_due()
        assert len(order) == 1
        assert sorted(other.get(i).status for i in ids) == ["pending", "pending", "waiting"]
        assert engine.store.get(ids[0]).concurrency_key == "c"  # type: ignore[union-attr]
    finally:
        other.close()


def test_a_keyless_limit_caps_the_workflow(engine: Engine, clock: ManualClock) -> None:
    order = _starts(engine)
    engine.register(_held("capped", 2))
    for n in range(4):
        engine.start("capped", {"name": str(n)})
    engine.run_due()
    assert len(order) == 2


def test_execute_counts_the_key_slot(engine: Engine) -> None:
    _starts(engine)
    engine.register(_held("orders", 1, key="input.customer"))
    assert engine.execute("orders", {"name": "x", "customer": "c"}).status == "waiting"
    assert engine.execute("orders", {"name": "y", "customer": "c"}).status == "pending"
    assert engine.execute("orders", {"name": "z", "customer": "d"}).status == "waiting"


@pytest.mark.parametrize("bad", [1.5, "3", True, 10**7])
def test_a_bad_priority_is_refused(engine: Engine, bad: Any) -> None:
    engine.register(_held("jobs", 1), check_actions=False)
    with pytest.raises(InputValidationError, match="priority must be a whole number"):
        engine.start("jobs", {"name": "x"}, priority=bad)
    assert engine.list("jobs") == []


def test_an_input_without_the_key_is_refused(engine: Engine) -> None:
    engine.register(_held("orders", 1, key="${{ input.customer }}"), check_actions=False)
    with pytest.raises(InputValidationError, match="concurrency key"):
        engine.start("orders", {"name": "x"})
    assert engine.list("orders") == []


def test_a_slot_reserved_by_a_dead_worker_is_inherited(engine: Engine, clock: ManualClock) -> None:
    """A worker reserved the slot (the instance is ``running``) and died before its first
    commit: whoever takes the lease over starts the instance in that slot, and the next of
    its key waits until it ends."""
    order = _starts(engine)
    engine.register(_held("orders", 1, key="input.customer"))
    first = engine.start("orders", {"name": "first", "customer": "c"})
    clock.advance(timedelta(seconds=1))
    engine.start("orders", {"name": "second", "customer": "c"})
    now = clock.now()
    # a lease of a second (Postgres times leases by its own clock, so real time must pass)
    claim = engine.store.claim(first, "dead-worker", now, now + timedelta(seconds=1))
    assert claim is not None
    assert engine.store.reserve_slot(first, claim[0], "orders")
    engine.run_due()  # its lease is live: nothing runs, the key's slot is taken
    assert order == []
    time.sleep(1.5)
    clock.advance(timedelta(minutes=1))  # the lease lapsed: taken over, in the slot
    engine.run_due()
    assert order == ["first"] and engine.get(first).status == "waiting"
    clock.advance(timedelta(hours=2))
    engine.run_due()
    assert order == ["first", "second"]


def test_get_and_status_show_the_key_and_the_priority(db_url: str, clock: ManualClock) -> None:
    with Engine(db_url, clock=clock) as engine:
        engine.register(_held("orders", 1, key="input.customer", priority=3), check_actions=False)
        iid = engine.start("orders", {"name": "x", "customer": "acme"}, priority=7)
        inst = engine.get(iid)
        assert (inst.priority, inst.concurrency_key) == (7, "acme")
    if not db_url.startswith("sqlite"):
        return  # the CLI's reading is the same on both
    env = {**os.environ, "STATEMACHINE_DB": db_url}
    shown = subprocess.run(
        [sys.executable, "-m", "statemachine", "status", iid],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "pending  priority 7  key 'acme'" in shown
