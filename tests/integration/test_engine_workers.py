"""Background workers (real clock): several engines sharing a database, control calls mid-step."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from statemachine import Engine, StepContext, WorkflowDefinition, workflow
from statemachine.engine.loop import GC_THRESHOLD
from tests.integration.gate import Gate


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


def _wait_until(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_two_engines_share_the_work_and_run_each_step_once(db_url: str) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def step(data: Any, ctx: StepContext) -> dict[str, Any]:
        with lock:
            runs[ctx.idempotency_key] += 1
        time.sleep(0.002)
        return {"step": ctx.step_name}

    def flow() -> WorkflowDefinition:
        return workflow("shared").task("a", step).task("b", step).task("c", step).build()

    engines = [Engine(db_url, worker_id=f"w{i}") for i in range(2)]
    try:
        for eng in engines:
            eng.register(flow())
        ids = [engines[0].start("shared", {"i": i}) for i in range(20)]
        with (
            engines[0].worker(concurrency=4, poll_interval="20ms"),
            engines[1].worker(concurrency=4, poll_interval="20ms"),
        ):
            for iid in ids:
                assert engines[1].wait(iid, timeout=60).status == "completed"
        assert len(runs) == 20 * 3
        assert set(runs.values()) == {1}, {k: v for k, v in runs.items() if v != 1}
        for iid in ids:
            types = [(h.type, h.step) for h in engines[0].history(iid)]
            for name in "abc":
                assert types.count(("workflow.step.completed", name)) == 1
            assert types.count(("workflow.completed", None)) == 1
    finally:
        for eng in engines:
            eng.close()
        gc.collect()


def _pause_mid_step(engine: Engine) -> tuple[str, list[Any]]:
    """Pause while step a runs, let a finish; returns the id and b's calls (still paused)."""
    gate = Gate()
    after: list[Any] = []

    def b(data: Any) -> str:
        after.append(data)
        return "b"

    engine.register(workflow("pause-mid").task("a", gate).task("b", b).build())
    iid = engine.start("pause-mid", {})
    with engine.worker(concurrency=2, poll_interval="20ms"):
        assert gate.entered.wait(timeout=20)
        engine.pause(iid)
        gate.release.set()
        _wait_until(lambda: engine.get(iid).step_results["a"].status == "completed")
        time.sleep(0.3)  # the worker keeps polling: b must not start
    return iid, after


def test_pause_while_a_step_runs_lets_it_finish_and_runs_nothing(engine: Engine) -> None:
    iid, after = _pause_mid_step(engine)
    inst = engine.get(iid)
    assert inst.status == "paused"
    assert inst.step_results["a"].output == "gate"
    assert after == []
    engine.resume(iid)
    with engine.worker(concurrency=2, poll_interval="20ms"):
        inst = engine.wait(iid, timeout=20)
    assert inst.status == "completed"
    assert after == ["gate"]
    assert [h.step for h in engine.history(iid) if h.type == "workflow.step.started"] == [
        "a",
        "b",
    ]


def test_pause_while_a_step_runs_records_no_new_step(engine: Engine) -> None:
    iid, after = _pause_mid_step(engine)
    inst = engine.get(iid)
    assert after == []
    assert "b" not in inst.step_results or inst.step_results["b"].status == "pending"
    types = [(h.type, h.step) for h in engine.history(iid)]
    assert ("workflow.step.started", "b") not in types


def test_cancel_while_a_step_runs_records_nothing_after(engine: Engine) -> None:
    gate = Gate()
    after: list[Any] = []
    engine.register(
        workflow("cancel-mid").task("a", gate).task("b", lambda x: after.append(x)).build()
    )
    iid = engine.start("cancel-mid", {})
    with engine.worker(concurrency=2, poll_interval="20ms"):
        assert gate.entered.wait(timeout=20)
        engine.cancel(iid)
        gate.release.set()
        time.sleep(0.3)
        inst = engine.get(iid)
    assert inst.status == "cancelled"
    assert inst.step_results["a"].status == "cancelled"
    assert after == []
    types = [h.type for h in engine.history(iid)]
    assert types.count("workflow.cancelled") == 1
    assert "workflow.completed" not in types
    # the abandoned handler's result is discarded; history notes it, after the cancel
    tail = types[types.index("workflow.cancelled") + 1 :]
    assert set(tail) <= {"workflow.step.late_result"}


def test_wait_times_out_without_a_worker(engine: Engine) -> None:
    engine.register(workflow("idle").task("a", lambda x: x).build())
    iid = engine.start("idle", {})
    with pytest.raises(TimeoutError):
        engine.wait(iid, timeout=0.2)
    assert engine.get(iid).status == "pending"


def test_run_worker_tunes_the_collector_while_it_runs_and_restores_it(engine: Engine) -> None:
    """A blocking worker owns its process meanwhile; the ``worker()`` context does not."""
    seen: list[tuple[int, ...]] = []

    def probe(data: Any) -> Any:
        seen.append(gc.get_threshold())
        if data["stop"]:  # run_worker's handler: stop once this step finishes
            os.kill(os.getpid(), signal.SIGTERM)
        return data

    engine.register(workflow("probe").task("look", probe).build())
    before = gc.get_threshold()
    iid = engine.start("probe", {"stop": True})
    engine.run_worker(concurrency=1, poll_interval="10ms")
    assert seen == [GC_THRESHOLD] != [before]
    assert gc.get_threshold() == before
    assert engine.get(iid).status == "completed"
    seen.clear()
    again = engine.start("probe", {"stop": False})
    with engine.worker(concurrency=1, poll_interval="10ms"):
        assert engine.wait(again, timeout=20).status == "completed"
    assert seen == [before]
