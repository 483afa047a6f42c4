"""Compensation (saga) and subworkflow steps on real databases, including a crash mid-compensation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from statemachine import CriticalError, Engine, InvalidTransition, load_yaml, workflow
from statemachine.engine import EngineSettings
from statemachine.testing import ManualClock
from tests.integration.programs import saga_worker

PROGRAM = Path(saga_worker.__file__)


def test_compensations_run_in_reverse_completion_order(db_url: str) -> None:
    undone: list[tuple[str, Any]] = []
    engine = Engine(db_url)

    def fail(_: Any) -> None:
        raise CriticalError("no stock")

    engine.register(
        workflow("order-saga")
        .task("reserve", lambda _: {"r": 1}, compensate=lambda out: undone.append(("reserve", out)))
        .task(
            "charge", lambda _: {"c": 2}, compensate=lambda out, ctx: undone.append(("charge", out))
        )
        .task("audit", lambda _: {"a": 3})  # no compensate: nothing to undo
        .task("ship", fail)
        .build()
    )
    inst = engine.execute("order-saga", {})
    assert inst.status == "failed"
    assert inst.error is not None and inst.error["message"] == "no stock"
    assert undone == [("charge", {"c": 2}), ("reserve", {"r": 1})]
    assert inst.step_results["charge#compensate"].status == "completed"
    types = [h.type for h in engine.history(inst.id)]
    assert types.index("workflow.compensating") < types.index("workflow.failed")
    engine.close()


def test_a_step_repeated_by_a_loop_is_undone_once_and_the_state_column_stays_small(
    db_url: str,
) -> None:
    """The state column is rewritten on every commit: 150 passes of a loop must not leave 150
    entries in it (it used to list every completion, and every finished step's ``prev``)."""
    undone: list[Any] = []
    engine = Engine(db_url)

    def fail(_: Any) -> None:
        raise CriticalError("carrier refused")

    engine.register(
        workflow("batches")
        .task("reserve", lambda data: {"n": data["n"] + 1}, compensate=undone.append)
        .task("pack", lambda data: data)
        .loop("again", condition="prev.n < 150", target="reserve", max_iterations=500)
        .task("ship", fail)
        .build()
    )
    inst = engine.execute("batches", {"n": 0})
    assert inst.status == "failed"
    assert undone == [{"n": 150}]  # the latest completion, undone once
    assert inst.step_results["reserve"].iteration == 149
    store = sqlalchemy.create_engine(db_url)
    with store.connect() as conn:
        state = conn.execute(
            sqlalchemy.text("SELECT state FROM sm_instance WHERE id = :id"), {"id": inst.id}
        ).scalar_one()
    store.dispose()
    frozen = state if isinstance(state, str) else json.dumps(state)
    assert len(frozen) < 400, frozen
    assert json.loads(frozen)["order"] == ["reserve"]
    engine.close()


def test_a_failing_compensation_is_retried_then_recorded(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock)
    calls: list[int] = []

    def flaky_undo(out: Any, ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise ConnectionError("refund service down")

    def fail(_: Any) -> None:
        raise CriticalError("boom")

    engine.register(
        workflow("undo-fails")
        .task(
            "pay",
            lambda _: {"p": 1},
            compensate=flaky_undo,
            retry={"max_attempts": 2, "interval": "1m"},
        )
        .task("ship", fail)
        .build()
    )
    inst = engine.execute("undo-fails", {})
    assert inst.status == "compensating"
    clock.advance("1m")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "failed"
    assert calls == [1, 2]
    assert inst.error is not None
    assert inst.error["compensation_errors"][0]["message"] == "refund service down"
    engine.close()


def test_compensation_resumes_after_a_crash(sqlite_url: str, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(PROGRAM), sqlite_url, str(tmp_path)])
    log = tmp_path / "log.txt"
    try:
        deadline = time.monotonic() + 60
        while "cancel-flight" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the worker never reached the compensation"
            assert proc.poll() is None, "the worker exited early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    time.sleep(1.2)  # the dead worker's 1 s lease runs out
    engine = Engine(sqlite_url, lease="1s")
    saga_worker.setup(engine, tmp_path, hang=False)
    assert engine.get(saga_worker.INSTANCE).status == "compensating"
    engine.run_due()
    inst = engine.get(saga_worker.INSTANCE)
    assert inst.status == "failed"
    runs = log.read_text().split()
    assert runs == [
        "book-hotel", "book-flight", "charge",
        "cancel-flight:f-1",  # killed inside the flight's compensation ...
        "cancel-flight:f-1",  # ... which runs again after recovery
        "cancel-hotel:h-1",   # then the older step is undone, exactly once
    ]  # fmt: skip
    engine.close()


def test_subworkflow_output_becomes_the_step_output(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock)
    engine.register(
        [
            workflow("kyc")
            .task("check", lambda x: {"ok": x["age"] >= 18})
            .wait("settle", duration="1h")
            .build(),
            workflow("signup")
            .task("create", lambda x: {"age": x["age"]})
            .subworkflow("verify", workflow="kyc")
            .pass_("done", transform=lambda ctx: {"verified": ctx.steps["verify"]["ok"]}, end=True)
            .build(),
        ]
    )
    inst = engine.execute("signup", {"age": 30})
    assert inst.status == "waiting"
    children = [c for c in engine.list(workflow="kyc")]
    assert len(children) == 1 and children[0].parent_id == inst.id
    clock.advance("1h")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"verified": True}
    assert engine.get(children[0].id).status == "completed"
    engine.close()


def test_a_failing_child_fails_the_step_and_cancel_reaches_children(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock)

    def reject(_: Any) -> None:
        raise CriticalError("rejected")

    engine.register(
        [
            workflow("bad-child").task("no", reject).build(),
            workflow("slow-child").wait("w", duration="1d").build(),
            workflow("parent-bad").subworkflow("sub", workflow="bad-child").build(),
            workflow("parent-slow").subworkflow("sub", workflow="slow-child").build(),
        ]
    )
    # a child missing at run time (unregistered since, or another process's registry) still
    # fails the step; `register` itself refuses it when it checks actions
    engine.register(
        workflow("parent-missing").subworkflow("sub", workflow="nope").build(),
        check_actions=False,
    )
    bad = engine.execute("parent-bad", {})
    assert bad.status == "failed"
    assert bad.error is not None and "rejected" in bad.error["message"]
    missing = engine.execute("parent-missing", {})
    assert missing.status == "failed"
    assert missing.error is not None and "nope" in missing.error["message"]
    slow = engine.execute("parent-slow", {})
    child = engine.list(workflow="slow-child")[0]
    assert child.status == "waiting" and child.parent_id == slow.id
    engine.cancel(slow.id)
    assert engine.get(child.id).status == "cancelled"
    with pytest.raises(InvalidTransition):
        engine.cancel(child.id)
    engine.close()


def _parent_waiting_on_child(engine: Engine) -> tuple[str, str]:
    engine.register(
        [
            workflow("sleepy-child").wait("w", duration="1d").build(),
            workflow("sleepy-parent").subworkflow("sub", workflow="sleepy-child").build(),
        ]
    )
    parent = engine.execute("sleepy-parent", {})
    assert parent.status == "waiting"
    (child,) = engine.list(workflow="sleepy-child")
    return parent.id, child.id


def test_a_child_cancelled_on_its_own_fails_its_parents_step(db_url: str) -> None:
    engine = Engine(db_url, clock=ManualClock())
    try:
        parent_id, child_id = _parent_waiting_on_child(engine)
        engine.cancel(child_id)
        engine.run_due()  # the cancel woke the parent: its step learns the child's end
        parent = engine.get(parent_id)
        assert parent.status == "failed"
        sub = parent.step_results["sub"]
        assert sub.status == "failed" and sub.error is not None
        assert sub.error["type"] == "SubworkflowFailed" and "cancelled" in sub.error["message"]
    finally:
        engine.close()


def test_a_dead_lettered_child_fails_its_parents_step(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock, settings=EngineSettings(lease=30.0, max_recoveries=0))
    try:
        parent_id, child_id = _parent_waiting_on_child(engine)
        clock.advance("1d")  # the child's timer is due, and a worker died running it alone
        # (its step's handler in flight): the count a takeover leaves (test_workers_deadletter.py
        # kills real workers for it)
        with engine.repo.tx() as conn:
            conn.execute(
                sqlalchemy.text("UPDATE sm_instance SET recoveries = 1 WHERE id = :id"),
                {"id": child_id},
            )
        engine.run_due()  # once is over max_recoveries=0: dead-lettered
        child = engine.get(child_id)
        assert child.status == "failed"
        assert child.error is not None and child.error["type"] == "DeadLettered"
        engine.run_due()
        parent = engine.get(parent_id)
        assert parent.status == "failed"
        sub = parent.step_results["sub"]
        assert sub.error is not None and sub.error["child"]["type"] == "DeadLettered"
    finally:
        engine.close()


class Trips:
    """Bookings as a travel agent keeps them: made, then maybe cancelled; a card that
    declines while ``declined`` is set."""

    def __init__(self) -> None:
        self.bookings: dict[str, str] = {}  # booking id -> "booked" | "cancelled"
        self.keys: list[str] = []
        self.charged: list[Any] = []
        self.declined = True

    def book(self, kind: str) -> Any:
        def handler(data: Any, ctx: Any) -> dict[str, str]:
            booking = f"{kind}-{len(self.bookings) + 1}"
            self.bookings[booking] = "booked"
            self.keys.append(ctx.idempotency_key)
            return {kind: booking}

        return handler

    def cancel(self, kind: str) -> Any:
        def handler(booking: dict[str, str]) -> dict[str, str]:
            self.bookings[booking[kind]] = "cancelled"
            return {"cancelled": booking[kind]}

        return handler

    def charge(self, data: Any) -> str:
        if self.declined:
            raise CriticalError("card declined")
        self.charged.append(data)
        return "charged"


def test_retry_after_compensation_books_again_before_charging(db_url: str) -> None:
    trips = Trips()
    engine = Engine(db_url)
    try:
        engine.action("bookHotel")(trips.book("hotel"))
        engine.action("cancelHotel")(trips.cancel("hotel"))
        engine.action("bookFlight")(trips.book("flight"))
        engine.action("cancelFlight")(trips.cancel("flight"))
        engine.action("chargePayment")(trips.charge)
        engine.register(load_yaml(Path(__file__).parents[2] / "definitions" / "trip-booking.yaml"))
        inst = engine.execute("trip-booking", {"city": "Oslo", "amount": 120})
        assert inst.status == "failed"
        assert trips.bookings == {"hotel-1": "cancelled", "flight-2": "cancelled"}
        assert inst.step_results["book-hotel"].status == "compensated"
        assert inst.step_results["book-flight"].status == "compensated"
        compensated = [
            h.step for h in engine.history(inst.id) if h.type == "workflow.step.compensated"
        ]
        assert compensated == ["book-flight", "book-hotel"]

        trips.declined = False
        engine.retry(inst.id)
        engine.run_due()
        inst = engine.get(inst.id)
        assert inst.status == "completed", inst.error
        assert trips.charged == [{"amount": 120}]
        # booked again, in the order of the first run, before the charge; the old ones stay cancelled
        assert trips.bookings == {
            "hotel-1": "cancelled",
            "flight-2": "cancelled",
            "hotel-3": "booked",
            "flight-4": "booked",
        }
        assert inst.step_results["book-hotel"].status == "completed"
        assert inst.step_results["book-hotel"].output == {"hotel": "hotel-3"}
        assert inst.step_results["book-flight"].output == {"flight": "flight-4"}
        assert len(set(trips.keys)) == 4  # a new idempotency key for each new booking
    finally:
        engine.close()
