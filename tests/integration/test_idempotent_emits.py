"""``emit(..., idempotency_key=)``: the same key starts nothing new and answers the same ids,
in one process, across engines and processes, under racing threads, over HTTP, until pruned."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from statemachine import Engine, InputValidationError, workflow
from statemachine.definition import models
from statemachine.testing import ManualClock

from .conftest import START

ROOT = Path(__file__).resolve().parents[2]


def _definitions() -> list[models.WorkflowDefinition]:
    return [
        workflow("welcome").trigger("Order.placed").pass_("greet", result={"hi": 1}).build(),
        workflow("bill").trigger("Order.placed").pass_("charge", result={"ok": 1}).build(),
    ]


def _engine(db_url: str, clock: ManualClock | None = None) -> Engine:
    eng = Engine(db_url, clock=clock)
    eng.register(_definitions())
    return eng


@pytest.fixture
def emitter(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    eng = _engine(db_url, clock)
    yield eng
    eng.close()
    gc.collect()


def test_the_same_key_twice_starts_nothing_new(emitter: Engine) -> None:
    first = emitter.emit("Order.placed", {"id": 1}, idempotency_key="evt-1")
    assert len(first) == 2
    assert emitter.emit("Order.placed", {"id": 1}, idempotency_key="evt-1") == first
    assert len(emitter.list()) == 2
    other = emitter.emit("Order.placed", {"id": 2}, idempotency_key="evt-2")
    assert set(other).isdisjoint(first)
    # a key belongs to its event: another event's key of that name is another key
    assert emitter.emit("Other.event", None, idempotency_key="evt-1") == []
    # without a key, every emit starts its workflows
    assert len(emitter.emit("Order.placed", {"id": 3})) == 2
    assert len(emitter.emit("Order.placed", {"id": 3})) == 2
    assert len(emitter.list()) == 8


def test_a_bad_key_is_refused(emitter: Engine) -> None:
    with pytest.raises(InputValidationError, match="idempotency_key"):
        emitter.emit("Order.placed", {}, idempotency_key="x" * 201)
    assert emitter.list() == []


def test_two_engines_on_one_database_agree(db_url: str, clock: ManualClock) -> None:
    a, b = _engine(db_url, clock), _engine(db_url, clock)
    try:
        ids = a.emit("Order.placed", {"id": 1}, idempotency_key="k")
        assert b.emit("Order.placed", {"id": 1}, idempotency_key="k") == ids
        assert len(b.list()) == 2
    finally:
        a.close()
        b.close()
        gc.collect()


def test_racing_threads_start_each_workflow_once(db_url: str, clock: ManualClock) -> None:
    engines = [_engine(db_url, clock) for _ in range(2)]
    answers: list[list[str]] = []
    barrier = threading.Barrier(8)

    def emit(eng: Engine) -> None:
        barrier.wait()
        answers.append(eng.emit("Order.placed", {"id": 1}, idempotency_key="race"))

    try:
        threads = [threading.Thread(target=emit, args=(engines[i % 2],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(answers) == 8
        assert all(sorted(a) == sorted(answers[0]) for a in answers), answers
        assert len(engines[0].list()) == 2
    finally:
        for eng in engines:
            eng.close()
        gc.collect()


_CHILD = """
import sys
from statemachine import Engine
from tests.integration.test_idempotent_emits import _definitions
with Engine(sys.argv[1]) as engine:
    engine.register(_definitions())
    print(" ".join(engine.emit("Order.placed", {"id": 1}, idempotency_key="proc")))
"""


def test_two_processes_agree(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    first, second = (sorted(out.split()) for out, _ in outs)
    assert first == second and len(first) == 2
    with Engine(db_url) as engine:
        assert sorted(i.id for i in engine.list()) == first


def test_prune_forgets_keys_older_than_its_cutoff(emitter: Engine, clock: ManualClock) -> None:
    first = emitter.emit("Order.placed", {"id": 1}, idempotency_key="old")
    emitter.run_due()  # both complete
    clock.advance("2d")
    assert emitter.emit("Order.placed", {"id": 1}, idempotency_key="old") == first
    emitter.prune(older_than="1d")
    assert emitter.list() == []
    again = emitter.emit("Order.placed", {"id": 1}, idempotency_key="old")
    assert len(again) == 2 and len(emitter.list()) == 2  # the key was forgotten: new starts
    assert clock.now() == START + timedelta(days=2)


def test_http_takes_the_key_in_the_body_or_a_header(emitter: Engine) -> None:
    from starlette.exceptions import StarletteDeprecationWarning

    from statemachine.server import create_app

    with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    headers = {"Content-Type": "application/json"}
    with TestClient(create_app(emitter), base_url="http://localhost", headers=headers) as c:
        body = {"name": "Order.placed", "data": {"id": 1}, "idempotency_key": "h-1"}
        first = c.post("/api/events", json=body)
        assert first.status_code == 200, first.text
        assert c.post("/api/events", json=body).json() == first.json()
        plain = {"name": "Order.placed", "data": {"id": 1}}
        by_header = c.post("/api/events", json=plain, headers={"Idempotency-Key": "h-2"})
        again = c.post("/api/events", json=plain, headers={"Idempotency-Key": "h-2"})
        assert by_header.json() == again.json()
        assert set(by_header.json()["started"]).isdisjoint(first.json()["started"])
        assert len(emitter.list()) == 4
        too_long = c.post("/api/events", json={**plain, "idempotency_key": "x" * 300})
        assert too_long.status_code == 422
