"""``execute`` with a generated id writes the new instance in the run's first commit (one fsync,
not two): the row, its ``workflow.started`` history and the first step's start land together,
subscribers hear of the instance only once it is stored, and a run that stops before that
commit still leaves the instance stored for a worker."""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import Engine, workflow
from statemachine.engine.runner import InstanceRunner


def _register(engine: Engine) -> None:
    engine.register(
        workflow("born").task("a", lambda d: {"a": d}).task("b", lambda d: {"b": d}).build()
    )


def test_the_insert_rides_on_the_first_transition(engine: Engine) -> None:
    _register(engine)
    engine.execute("born", 0)  # warm: the first run may pay for one-time setup
    committer = engine.repo.committer
    before = committer.batches
    seen: list[tuple[str, str | None]] = []
    engine.on("*", lambda e: seen.append((e["type"], e.get("step"))))
    inst = engine.execute("born", 1)
    assert inst.status == "completed" and inst.output == {"b": {"a": 1}}
    assert committer.batches - before == 3  # start+a, a done+b, b done+end: no lone insert
    history = engine.history(inst.id)
    assert [h.seq for h in history] == list(range(1, len(history) + 1))
    assert [(h.type, h.step) for h in history][:2] == [
        ("workflow.started", None),
        ("workflow.step.started", "a"),
    ]
    assert seen[:2] == [("workflow.started", None), ("workflow.step.started", "a")]
    assert seen.count(("workflow.started", None)) == 1
    assert engine.get(inst.id) == inst


def test_a_given_id_is_inserted_first_and_execute_stays_idempotent(engine: Engine) -> None:
    _register(engine)
    first = engine.execute("born", 1, instance_id="given")
    again = engine.execute("born", 2, instance_id="given")
    assert first.status == again.status == "completed"
    assert again.input == 1 and again == engine.get("given")
    assert [h.type for h in engine.history("given")].count("workflow.started") == 1


def test_a_run_that_stops_before_its_first_commit_still_stores_the_instance(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(engine)
    started: list[str] = []
    engine.on("workflow.started", lambda e: started.append(e["instance_id"]))

    async def stops(self: InstanceRunner) -> Any:
        raise RuntimeError("stopped before the first commit")

    monkeypatch.setattr(InstanceRunner, "run", stops)
    with pytest.raises(RuntimeError, match="first commit"):
        engine.execute("born", 5)
    monkeypatch.undo()
    (stored,) = engine.list(workflow="born")
    assert stored.status == "pending" and started == [stored.id]
    rec = engine.store.get(stored.id)
    assert rec is not None and rec.lease_owner is None  # a worker may take it at once
    assert engine.run_due() == 1
    assert engine.get(stored.id).output == {"b": {"a": 5}}
