"""Ids, names and nesting the store cannot hold are refused in Python, the same way on SQLite and
Postgres (Postgres would refuse the write, SQLite would keep it); and one instance whose writes
the database refuses does not keep ``run_due`` or a worker from the others."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from statemachine import (
    DefinitionError,
    Engine,
    InputValidationError,
    StepContext,
    workflow,
)
from statemachine.engine.inputs import MAX_NESTING
from statemachine.testing import ManualClock


@pytest.fixture
def eng(db_url: str) -> Iterator[Engine]:
    engine = Engine(db_url, clock=ManualClock())
    yield engine
    engine.close()
    gc.collect()


def _parent_and_child(engine: Engine) -> None:
    engine.register(
        [
            workflow("kid").task("k", lambda x: {"kid": True}).build(),
            workflow("mum").subworkflow("subs", workflow="kid").build(),
        ]
    )


@pytest.mark.parametrize("length", [188, 193])
def test_a_long_parent_id_still_runs_its_child(eng: Engine, length: int) -> None:
    """188 characters of parent id: the child's id (``{parent}:subs:0``) is 195, its notice
    to the parent (``child:{child}``) 201; 193 gives the longest child id, 200."""
    _parent_and_child(eng)
    parent = eng.execute("mum", {}, instance_id="p" * length)
    assert parent.status == "completed", parent.error
    assert parent.output == {"kid": True}
    (child,) = eng.list(workflow="kid")
    assert len(child.id) == length + 7 and child.status == "completed"


def test_a_child_id_too_long_fails_the_parents_step_with_a_clear_error(eng: Engine) -> None:
    _parent_and_child(eng)
    other = eng.start("kid", {})
    parent = eng.execute("mum", {}, instance_id="p" * 200)
    assert parent.status == "failed"
    assert parent.error is not None
    assert "200" in parent.error["message"] and "child instance id" in parent.error["message"]
    assert eng.list(workflow="kid") == [eng.get(other)]  # no child was stored
    eng.run_due()  # and the rest goes on
    assert eng.get(other).status == "completed"


def test_a_self_recursive_subworkflow_stops_at_the_nesting_limit(eng: Engine) -> None:
    # `register` refuses the cycle when it checks actions (test_register_children); a process
    # that registers without that check (check_actions=False) still meets the bound at run time
    eng.register(
        workflow("again").subworkflow("deeper", workflow="again").build(), check_actions=False
    )
    root = eng.execute("again", {}, instance_id="r")
    eng.run_due()
    root = eng.get(root.id)
    assert root.status == "failed"
    family = eng.list(workflow="again", limit=1000)
    assert len(family) == MAX_NESTING + 1  # the root and MAX_NESTING levels below it
    assert {i.status for i in family} == {"failed"}
    deepest = max(family, key=lambda i: len(i.id))
    assert deepest.error is not None
    message = deepest.error["message"]
    assert f"nesting depth {MAX_NESTING + 1}" in message and f"limit is {MAX_NESTING}" in message
    assert deepest.error["child"]["type"] == "StatemachineError"  # why its step failed


def test_event_names_and_worker_ids_longer_than_stored_are_refused(
    eng: Engine, db_url: str
) -> None:
    eng.register(workflow("waits").wait("w", event="go").build())
    iid = eng.execute("waits", {}).id
    with pytest.raises(InputValidationError, match="at most 200"):
        eng.send_event(iid, "e" * 201)
    eng.send_event(iid, "go" + "o" * 198)  # 200 is fine, and kept
    with pytest.raises(InputValidationError, match="worker_id"):
        Engine(db_url, worker_id="w" * 201)


def test_an_emitted_event_name_longer_than_stored_fails_the_step(eng: Engine) -> None:
    def loud(data: Any, ctx: StepContext) -> dict[str, Any]:
        ctx.emit("n" * 200, {"fits": True})
        ctx.emit(data["name"], {})
        return {}

    eng.register(workflow("loud").task("shout", loud).build())
    ok = eng.execute("loud", {"name": "short"})
    assert ok.status == "completed"
    assert [h.type for h in eng.history(ok.id)].count("n" * 200) == 1
    bad = eng.execute("loud", {"name": "n" * 201})
    assert bad.status == "failed"
    assert bad.error is not None and "ctx.emit" in bad.error["message"]


def test_names_and_paths_longer_than_stored_are_refused_at_register(eng: Engine) -> None:
    with pytest.raises(DefinitionError, match="name is longer than 200"):
        eng.register(workflow("n" * 201).task("a", lambda x: x).build())
    with pytest.raises(DefinitionError, match="version is longer than 100"):
        eng.register(workflow("v", version="1" * 101).task("a", lambda x: x).build())
    with pytest.raises(DefinitionError, match="too long to store"):
        eng.register(workflow("deep").task("s" * 490, lambda x: x).build())
    assert eng.definitions() == []


def _refuse_completion_of(engine: Engine, instance_id: str) -> None:
    """A real trigger: the database refuses to mark this one instance completed, or failed
    (SQLite's refusal is a constraint error, which fails the step instead of its result)."""
    with engine.repo.engine.begin() as conn:
        if engine.store.dialect == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.id = '{instance_id}' AND NEW.status IN ('completed', 'failed') THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON sm_instance "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE OF status ON sm_instance "
                f"WHEN NEW.id = '{instance_id}' AND NEW.status IN ('completed', 'failed') "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )


def test_run_due_serves_the_others_when_one_instance_cannot_be_written(
    eng: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    eng.register(workflow("one").task("a", lambda x: {"ok": x}).build())
    _refuse_completion_of(eng, "bad")
    eng.start("one", 0, instance_id="bad")  # first in line
    good = [eng.start("one", n) for n in range(1, 6)]
    with caplog.at_level(logging.ERROR, logger="statemachine.worker"):
        assert eng.run_due() >= 5
        eng.run_due()  # again: the refused one does not make it raise either
    assert {eng.get(i).status for i in good} == {"completed"}
    assert eng.get("bad").status not in ("completed", "failed")
    assert any("bad" in r.getMessage() for r in caplog.records)


def test_a_worker_serves_the_others_when_one_instance_cannot_be_written(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(db_url)
    try:
        engine.register(workflow("one").task("a", lambda x: {"ok": x}).build())
        _refuse_completion_of(engine, "bad")
        engine.start("one", 0, instance_id="bad")
        good = [engine.start("one", n) for n in range(1, 6)]
        with (
            caplog.at_level(logging.ERROR, logger="statemachine.worker"),
            engine.worker(concurrency=2, poll_interval="20ms"),
        ):
            for iid in good:
                assert engine.wait(iid, timeout=60).status == "completed"
        assert engine.get("bad").status not in ("completed", "failed")
        logged = [r for r in caplog.records if "bad" in r.getMessage()]
        assert logged and logged[0].exc_info is not None
    finally:
        engine.close()
        gc.collect()
