"""``ctx.log`` lines and the worker's failure reports: in history with the step's result, and on
the stdlib loggers ``statemachine.steps`` / ``statemachine.worker`` (API.md section 10)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from statemachine import Engine, StepContext, workflow
from statemachine.engine import EngineSettings
from statemachine.testing import ManualClock


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


def _logs(engine: Engine, iid: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e.step, e.data) for e in engine.history(iid) if e.type == "workflow.step.log"]


def test_ctx_log_is_stored_with_the_step_and_sent_to_the_steps_logger(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def first(data: Any, ctx: StepContext) -> dict[str, Any]:
        ctx.log("info", "charging", amount=12, tags=["a"])
        ctx.emit("order.audited", {"by": "first"})
        ctx.log("WARNING", "odd\x00 value", obj=Opaque(), text="a b")
        ctx.log(logging.DEBUG, "details")
        return {"ok": True}

    engine.register(workflow("logged").task("first", first).build())
    caplog.set_level(logging.DEBUG, logger="statemachine")
    inst = engine.execute("logged", {}, instance_id="log-1")
    assert inst.status == "completed"

    assert _logs(engine, "log-1") == [
        ("first", {"level": "info", "message": "charging", "fields": {"amount": 12, "tags": ["a"]}}),
        ("first", {"level": "warning", "message": "odd\\x00 value",
                   "fields": {"obj": "<Opaque>", "text": "a b"}}),
        ("first", {"level": "debug", "message": "details", "fields": {}}),
    ]  # fmt: skip
    types = [e.type for e in engine.history("log-1")]
    # recorded where ctx.emit events are: just before the step's result, in call order
    at = types.index("workflow.step.completed")
    assert types[at - 4 : at] == [
        "workflow.step.log", "order.audited", "workflow.step.log", "workflow.step.log"
    ]  # fmt: skip

    records = [r for r in caplog.records if r.name == "statemachine.steps"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.DEBUG]
    first_record: Any = records[0]
    assert (first_record.instance_id, first_record.workflow, first_record.step) == (
        "log-1",
        "logged",
        "first",
    )
    assert first_record.getMessage() == '[log-1] logged/first: charging amount=12 tags=["a"]'


def test_a_failed_attempt_keeps_its_log_lines_and_the_worker_reports_it(
    engine: Engine, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(data: Any, ctx: StepContext) -> None:
        ctx.log("error", f"attempt {ctx.attempt} goes wrong")
        raise RuntimeError(f"boom {ctx.attempt}")

    engine.register(
        workflow("flaky").task("pay", flaky, retry={"max_attempts": 2, "interval": "1s"}).build()
    )
    caplog.set_level(logging.INFO, logger="statemachine")
    engine.start("flaky", {}, instance_id="f-1")
    with engine.worker(poll_interval="20ms"):
        deadline = time.monotonic() + 20
        while len(_logs(engine, "f-1")) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        clock.advance("2s")  # the retry is due
        assert engine.wait("f-1", timeout=20).status == "failed"
    assert [d["message"] for _, d in _logs(engine, "f-1")] == [
        "attempt 1 goes wrong",
        "attempt 2 goes wrong",
    ]

    reports = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "statemachine.worker"
    ]
    assert reports == [
        (logging.INFO, "instance f-1 (flaky): step pay failed (attempt 1), retrying in 1s: "
                       "RuntimeError: boom 1"),
        (logging.WARNING, "instance f-1 (flaky): step pay failed (attempt 2): RuntimeError: boom 2"),
        (logging.ERROR, "instance f-1 (flaky) failed at step pay: RuntimeError: boom 2"),
    ]  # fmt: skip
    last: Any = [r for r in caplog.records if r.name == "statemachine.worker"][-1]
    assert (last.instance_id, last.workflow, last.event) == ("f-1", "flaky", "workflow.failed")

    # execute() returns the failure to its caller: no report (a script would print it twice)
    caplog.clear()
    assert engine.execute("flaky", {}, instance_id="f-2").status == "waiting"  # its retry
    assert not [r for r in caplog.records if r.name == "statemachine.worker"]


def test_a_dead_letter_is_reported(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with Engine(db_url, settings=EngineSettings(max_recoveries=0)) as engine:
        engine.register(workflow("doomed").task("a", lambda x: x).build())
        iid = engine.start("doomed", {}, instance_id="dl-1")
        now = engine.clock.now()
        claim = engine.store.claim(iid, "gone", now, now)
        assert claim is not None
        engine.store.release(iid, claim[0], recovery=True)  # its worker died once: over the limit
        caplog.set_level(logging.INFO, logger="statemachine")
        engine.run_due()
        assert engine.get(iid).status == "failed"
    reports = [r for r in caplog.records if r.name == "statemachine.worker"]
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in reports] == [
        (logging.ERROR, "instance dl-1 (doomed) dead-lettered")
    ]
