"""A commit the database refuses never makes a handler run again in a loop.

Refused data (SQLSTATE class 22/23, a value the driver cannot encode) fails the step with
``StoreRefused``, once; a commit that keeps failing is backed off, counted, and dead-lettered.
Values a database would refuse are refused up front instead, the same way on both backends.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from statemachine import Engine, StepContext, workflow
from statemachine.engine import EngineSettings
from statemachine.testing import ManualClock
from tests.integration.conftest import START

EMITS: dict[str, tuple[str, Any]] = {
    "nul_in_name": ("payment\x00done", {"ok": True}),
    "surrogate_in_name": ("payment\ud800", {"ok": True}),
    "name_too_long": ("n" * 201, {"ok": True}),
    "nul_in_data": ("payment.done", {"note": "a\x00b"}),
    "nul_in_data_key": ("payment.done", {"a\x00": 1}),
    "surrogate_in_data": ("payment.done", ["\udc80"]),
    "nan_in_data": ("payment.done", {"amount": math.nan}),
    "data_not_json": ("payment.done", {"when": {1, 2}}),
}


@pytest.mark.parametrize("case", sorted(EMITS))
def test_an_emit_the_database_would_refuse_fails_the_step_once_in_a_worker(
    db_url: str, case: str
) -> None:
    """The report: 177 handler runs in 10 s on Postgres, the instance ``running`` for ever."""
    name, data = EMITS[case]
    runs: list[int] = []

    def pay(_: Any, ctx: StepContext) -> dict[str, Any]:
        runs.append(ctx.attempt)
        ctx.emit(name, data)
        return {"paid": True}

    engine = Engine(db_url)
    try:
        engine.register(workflow("pay").task("charge", pay).build())
        iid = engine.start("pay", {})
        with engine.worker(concurrency=2, poll_interval="20ms"):
            inst = engine.wait(iid, timeout=30)
        assert inst.status == "failed"
        assert inst.error is not None and inst.error["type"] == "InputValidationError"
        assert "ctx.emit" in inst.error["message"]
        assert runs == [1]
        assert engine.store.get(iid).recoveries == 0  # type: ignore[union-attr]
    finally:
        engine.close()
        gc.collect()


def _refuse(
    engine: Engine,
    instance_id: str,
    statuses: tuple[str, ...],
    code: str,
    spare: str = "DeadLettered",
) -> None:
    """A real trigger: the database refuses to give this one instance any of ``statuses``
    (unless its error's type is ``spare``: being dead-lettered). ``code``: Postgres' SQLSTATE
    of the refusal (SQLite's RAISE is always a constraint failure, class 23)."""
    listed = ", ".join(f"'{s}'" for s in statuses)
    with engine.repo.engine.begin() as conn:
        if engine.store.dialect == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.id = '{instance_id}' AND NEW.status IN ({listed}) "
                f"AND NEW.error::jsonb->>'type' IS DISTINCT FROM '{spare}' THEN "
                f"RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{code}'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON sm_instance "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON sm_instance "
                f"WHEN NEW.id = '{instance_id}' AND NEW.status IN ({listed}) "
                f"AND coalesce(json_extract(NEW.error, '$.type'), '') != '{spare}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )


@pytest.fixture
def counted(db_url: str) -> Iterator[tuple[Engine, ManualClock, list[str]]]:
    """An engine on a hand-moved clock with workflow ``pay``, whose handler notes each run;
    three recoveries at most before an instance is dead-lettered."""
    clock = ManualClock(START)
    engine = Engine(db_url, clock=clock, settings=EngineSettings(max_recoveries=3))
    runs: list[str] = []

    def pay(_: Any, ctx: StepContext) -> dict[str, Any]:
        runs.append(ctx.instance_id)
        return {"paid": True}

    engine.register(workflow("pay").task("charge", pay).build())
    yield engine, clock, runs
    engine.close()
    gc.collect()


def test_a_result_the_database_refuses_fails_the_step_without_a_rerun(
    counted: tuple[Engine, ManualClock, list[str]],
) -> None:
    engine, clock, runs = counted
    _refuse(engine, "bad", ("completed",), code="23514")  # check_violation
    engine.start("pay", {}, instance_id="bad")
    good = engine.start("pay", {})
    engine.run_due()
    for _ in range(3):  # nothing is left to run: the handler never runs again
        clock.advance("1h")
        engine.run_due()
    assert sorted(runs) == sorted(["bad", good])
    assert engine.get(good).status == "completed"
    bad = engine.get("bad")
    assert bad.status == "failed"
    step = bad.step_results["charge"]
    assert step.status == "failed" and step.attempts == 1
    assert step.error is not None and step.error["type"] == "StoreRefused"
    assert "refused by the test" in step.error["message"]
    assert engine.store.get("bad").recoveries == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("code", ["23514", "P0001"], ids=["refused_data", "other_error"])
def test_a_commit_that_keeps_failing_backs_off_and_is_dead_lettered(
    counted: tuple[Engine, ManualClock, list[str]], code: str
) -> None:
    """Neither the result nor the failure can be recorded. A refusal of the data (class 23) is
    tried as a step failure, then an instance failure; any other error (P0001, a trigger's
    own) leaves the run at once. Either way the instance is due again later each time, and
    dead-lettered after ``max_recoveries``: the handler runs a bounded number of times."""
    engine, clock, runs = counted
    if code != "23514" and engine.store.dialect != "postgresql":
        pytest.skip("SQLite's triggers refuse with a constraint error only")
    _refuse(engine, "bad", ("completed", "failed"), code=code)
    engine.start("pay", {}, instance_id="bad")
    delays = []
    while True:
        assert len(runs) <= 10, "a hot loop"
        engine.run_due()
        engine.run_due()  # at once again: not due yet, nothing runs
        inst = engine.get("bad")
        if inst.status == "failed":
            break
        assert inst.wake_at is not None
        delays.append((inst.wake_at - clock.now()).total_seconds())
        clock.advance(timedelta(seconds=delays[-1]))
    assert len(runs) == 4  # the first run, and one per recovery allowed
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]  # later each time
    bad = engine.get("bad")
    assert bad.error is not None and bad.error["type"] == "DeadLettered"
    assert "could not be committed" in bad.error["message"]


def test_a_dead_letter_the_database_refuses_is_backed_off_too(
    counted: tuple[Engine, ManualClock, list[str]],
) -> None:
    """Once the handler's runs are used up, only the dead letter is tried, and it too is
    refused: still later each time, and the handler never runs again."""
    engine, clock, runs = counted
    _refuse(engine, "bad", ("completed", "failed"), code="23514", spare="nothing")
    engine.start("pay", {}, instance_id="bad")
    delays = []
    for _ in range(8):
        engine.run_due()
        engine.run_due()
        inst = engine.get("bad")
        assert inst.status == "running" and inst.wake_at is not None
        delays.append((inst.wake_at - clock.now()).total_seconds())
        clock.advance(timedelta(seconds=delays[-1]))
    assert len(runs) == 4
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]


def test_a_handler_error_with_nul_or_a_lone_surrogate_is_recorded_escaped(
    db_url: str, clock: ManualClock
) -> None:
    """A failure is recorded whatever its message holds (refusing it would leave the step
    unrecorded, and re-run): the same escaped text on every database."""

    def boom_raw(_: Any) -> None:
        raise ValueError("card\x00refused \udc80")

    engine = Engine(db_url, clock=clock)
    try:
        engine.register(workflow("raw").task("a", boom_raw).build())
        inst = engine.execute("raw", {})
        assert inst.status == "failed"
        again = engine.get(inst.id)
        assert again.error is not None
        assert again.error["message"] == "card\\x00refused \\udc80"
        assert again.step_results["a"].error["message"] == "card\\x00refused \\udc80"  # type: ignore[index]
    finally:
        engine.close()
        gc.collect()


INPUTS: dict[str, Any] = {
    "nul": {"k": "a\x00"},
    "surrogate": {"k": "\ud800"},
    "nan": {"k": math.nan},
    "not_json": {"k": {1, 2}},
}


@pytest.mark.parametrize("case", sorted(INPUTS))
def test_a_mapped_input_that_cannot_be_stored_fails_the_step_the_same_on_every_database(
    engine: Engine, case: str
) -> None:
    """An ``input=`` mapper's value is stored with the step, so it is checked as outputs are:
    before, NaN passed on SQLite and was refused by Postgres, and a set was refused by both
    at commit time with the driver's words."""
    runs: list[Any] = []
    engine.register(
        workflow("mapped").task("a", runs.append, input=lambda prev, wf: INPUTS[case]).build()
    )
    inst = engine.execute("mapped", {})
    engine.run_due()
    assert runs == []
    inst = engine.get(inst.id)
    assert inst.status == "failed"
    step = inst.step_results["a"]
    assert step.status == "failed" and step.error is not None
    assert step.error["type"] == "OutputNotStorable" and "step 'a'" in step.error["message"]


def test_the_http_api_answers_a_refused_write_with_422_not_503(db_url: str) -> None:
    """503 says "try again later"; data the database refused would be refused again."""
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    from statemachine.server import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    engine = Engine(db_url)
    try:
        engine.register(workflow("plain").end("done").build())
        with engine.repo.engine.begin() as conn:  # a real trigger refuses this one id
            if engine.store.dialect == "postgresql":
                conn.exec_driver_sql(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.id = 'bad' THEN RAISE EXCEPTION 'refused by the test' "
                    "USING ERRCODE = '23514'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
                conn.exec_driver_sql(
                    "CREATE TRIGGER refuse BEFORE INSERT ON sm_instance "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            else:
                conn.exec_driver_sql(
                    "CREATE TRIGGER refuse BEFORE INSERT ON sm_instance WHEN NEW.id = 'bad' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
        with TestClient(create_app(engine), base_url="http://127.0.0.1") as client:
            res = client.post("/api/workflows/plain/instances", json={"instance_id": "bad"})
            assert res.status_code == 422, res.text
            assert res.json()["error"]["code"] == "store_refused"
            ok = client.post("/api/workflows/plain/instances", json={"instance_id": "good"})
            assert ok.status_code == 201
    finally:
        engine.close()
        gc.collect()
