"""``execute`` and ``run_due`` run on the caller's own thread, on a loop of their own: from
many threads at once, from inside a coroutine, and from a handler that calls back into the
engine; the loop a thread used is kept for its next call and closed with the engine."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from statemachine import Engine, workflow


def _chain(name: str, handler: Any, steps: int = 3) -> Any:
    builder = workflow(name)
    for i in range(steps):
        builder = builder.task(f"s{i}", handler)
    return builder.build()


def _threads(where: list[str]) -> Any:
    def handler(data: Any) -> Any:
        where.append(threading.current_thread().name)
        return data

    return handler


def test_executes_on_many_threads_at_once_all_complete_on_their_own_threads(
    engine: Engine,
) -> None:
    where: list[str] = []
    engine.register(_chain("many", _threads(where), steps=4))
    done: dict[str, list[str]] = {}

    def caller(k: int) -> None:
        done[threading.current_thread().name] = [
            engine.execute("many", {"k": k, "i": i}).status for i in range(15)
        ]

    threads = [threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(done) == [f"caller-{k}" for k in range(6)]
    assert all(statuses == ["completed"] * 15 for statuses in done.values())
    assert len(where) == 6 * 15 * 4
    inline = {name for name in where if name.startswith("caller-")}
    assert len(inline) >= 2  # quick handlers ran inline, each on its own caller's thread
    assert engine.services.local.active_runners == 0  # every run counted out again
    assert engine.services.local.held == {}


def test_execute_from_inside_a_coroutine_runs_on_a_thread_of_its_own(engine: Engine) -> None:
    """A running loop on the caller's thread cannot run another: the call still works."""
    where: list[str] = []
    engine.register(_chain("from-async", _threads(where)))

    async def main() -> str:
        return engine.execute("from-async", {"n": 1}).status

    assert asyncio.run(main()) == "completed"
    assert len(where) == 3


def test_an_async_handler_may_execute_another_workflow(engine: Engine) -> None:
    engine.register(_chain("inner", _threads([]), steps=2))

    async def outer(data: Any) -> Any:
        await asyncio.sleep(0)
        return {"inner": engine.execute("inner", data).status}

    engine.register(workflow("outer").task("call", outer).build())
    inst = engine.execute("outer", {"n": 1})
    assert inst.status == "completed", inst.error
    assert inst.output == {"inner": "completed"}


def test_run_due_runs_on_the_callers_thread(engine: Engine) -> None:
    where: list[str] = []
    engine.register(_chain("due", _threads(where), steps=4))
    ids = [engine.start("due", {"n": i}) for i in range(3)]
    assert engine.run_due() >= 3
    assert {engine.get(i).status for i in ids} == {"completed"}
    assert threading.current_thread().name in where  # inline, here: no loop thread


def test_a_thread_keeps_its_loop_and_the_engine_closes_it(sqlite_url: str) -> None:
    engine = Engine(sqlite_url)
    loops: list[asyncio.AbstractEventLoop] = []

    async def which(data: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        return data

    engine.register(workflow("loops").task("a", which).build())
    engine.execute("loops", {})
    engine.execute("loops", {})
    assert loops[0] is loops[1]  # one loop per thread, not one per call
    assert not loops[0].is_closed()
    engine.close()
    assert loops[0].is_closed()


def _interrupted_once(url: str) -> Engine:
    """An engine whose first run ("first") was cut by Ctrl-C raised in its own code."""
    engine = Engine(url)
    engine.register(workflow("w").task("a", lambda x: x).build())

    def interrupted(event: Any) -> None:
        raise KeyboardInterrupt

    off = engine.on("workflow.step.started", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.execute("w", {}, "first")
    off()
    return engine


def test_an_interrupt_raised_inside_a_run_leaves_a_loop_that_closes(sqlite_url: str) -> None:
    """Ctrl-C that lands in the run's own code (here: a subscriber printing progress, as the
    CLI's ``run`` does) ends the run's task and the loop at once; closing the engine (and the
    loop kept for this thread) must still work, and the run gave its lease up."""
    engine = _interrupted_once(sqlite_url)
    engine.close()  # what the CLI's run does next: closing the thread's loop must not fail
    with Engine(sqlite_url) as again:
        again.register(workflow("w").task("a", lambda x: x).build())
        assert again.execute("w", {}, "second").status == "completed"
        rec = again.store.get("first")
        assert rec is not None and rec.lease_owner is None  # the interrupted run gave it up


def test_after_an_interrupt_the_same_thread_runs_on(sqlite_url: str) -> None:
    engine = _interrupted_once(sqlite_url)
    assert engine.execute("w", {}, "second").status == "completed"
    engine.close()
