"""An in-memory database (``sqlite://``, ``sqlite:///:memory:``): one engine, nothing kept.

The engine works on several threads (the event loop, the committer, the caller): every one of
them must see the same database, not an empty one of its own.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import Engine, StepContext, branch, workflow
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)
MEMORY_URLS = ["sqlite://", "sqlite:///:memory:", "sqlite:///file:smtest?mode=memory&uri=true"]


@pytest.fixture(params=MEMORY_URLS)
def memory(request: pytest.FixtureRequest) -> Iterator[Engine]:
    eng = Engine(request.param, clock=ManualClock(START))
    yield eng
    eng.close()
    gc.collect()


def _two_steps() -> Any:
    return (
        workflow("two")
        .task("a", lambda x: {"n": x["n"] + 1})
        .task("b", lambda prev: {"n": prev["n"] * 10})
        .build()
    )


def test_execute_runs_to_the_end(memory: Engine) -> None:
    memory.register(_two_steps())
    inst = memory.execute("two", {"n": 1})
    assert inst.status == "completed"
    assert inst.output == {"n": 20}
    assert memory.get(inst.id).output == {"n": 20}
    assert [h.type for h in memory.history(inst.id)][-1] == "workflow.completed"


def test_start_then_run_due(memory: Engine) -> None:
    memory.register(_two_steps())
    ids = [memory.start("two", {"n": n}) for n in range(5)]
    assert memory.run_due() == 5
    assert sorted(memory.get(i).output["n"] for i in ids) == [10, 20, 30, 40, 50]


def test_timers_and_events_with_a_manual_clock(memory: Engine) -> None:
    clock = memory.clock
    assert isinstance(clock, ManualClock)
    memory.register(
        workflow("timed")
        .wait("nap", duration="3d")
        .wait("signal", event="go")
        .pass_("done", transform=lambda ctx: ctx.steps["signal"], end=True)
        .build()
    )
    iid = memory.start("timed")
    memory.run_due()
    assert memory.get(iid).status == "waiting"
    clock.advance("3d")
    memory.run_due()
    memory.send_event(iid, "go", {"ok": True})
    memory.run_due()
    inst = memory.get(iid)
    assert inst.status == "completed"
    assert inst.output == {"ok": True}


def test_worker_threads_and_readers_share_one_database(memory: Engine) -> None:
    """A worker (event loop + committer) runs 40 instances with parallel branches while this
    thread reads: no thread sees an empty database, none fails on a shared transaction."""
    memory.register(
        workflow("fan")
        .parallel(
            "both",
            branches=[
                branch("left").task("l", lambda x, ctx: {"l": ctx.instance_id}).build(),
                branch("right").task("r", lambda x: {"r": 1}).build(),
            ],
        )
        .build()
    )
    ids = [memory.start("fan", {"i": i}) for i in range(40)]
    with memory.worker(concurrency=8, poll_interval="10ms"):
        for iid in ids:
            memory.list(limit=5)  # reads from this thread while the worker writes
            assert memory.wait(iid, timeout=60).status == "completed"
    assert {i.status for i in memory.list(limit=100)} == {"completed"}


def test_execute_from_several_threads(memory: Engine) -> None:
    def handler(x: Any, ctx: StepContext) -> dict[str, Any]:
        ctx.set_metadata("seen", True)  # a write from the handler's thread
        return {"x": x}

    memory.register(workflow("meta").task("a", handler).build())
    results: list[str] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results.append(memory.execute("meta", n).status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == ["completed"] * 6


def test_two_memory_engines_share_nothing() -> None:
    first, second = Engine("sqlite://"), Engine("sqlite://")
    try:
        first.register(_two_steps())
        first.execute("two", {"n": 1})
        assert len(first.list()) == 1
        assert second.list() == []
    finally:
        first.close()
        second.close()


def test_execute_while_a_worker_claims(memory: Engine) -> None:
    """Inline commits (a caller's execute) and the worker's claims (on the committer thread)
    take the one connection in the same order: neither waits for the other forever."""
    memory.register(_two_steps())
    failures: list[BaseException] = []

    def run() -> None:
        try:
            for n in range(20):
                assert memory.execute("two", {"n": n}).status == "completed"
        except BaseException as exc:
            failures.append(exc)

    with memory.worker(concurrency=4, poll_interval="1ms"):
        ids = [memory.start("two", {"n": n}) for n in range(40)]
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for iid in ids:
            assert memory.wait(iid, timeout=60).status == "completed"
    assert failures == []
