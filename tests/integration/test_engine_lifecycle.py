"""Engine lifecycle: closing an engine releases what it opened."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings

from statemachine import Engine, StatemachineError, workflow
from statemachine.testing import ManualClock


def test_close_releases_the_event_loop(db_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = Engine(db_url, clock=ManualClock())
        engine.register(workflow("tiny").task("a", lambda x: x).build())
        assert engine.execute("tiny", 1).status == "completed"
        engine.close()
        del engine
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_context_manager_and_double_close(db_url: str) -> None:
    with Engine(db_url, clock=ManualClock()) as engine:
        engine.register(workflow("tiny").task("a", lambda x: x + 1).build())
        iid = engine.execute("tiny", 1).id
    engine.close()  # a second close is harmless
    reopened = Engine(db_url, clock=ManualClock())
    try:
        assert reopened.get(iid).output == 2
    finally:
        reopened.close()


def test_execute_after_close_raises_and_stores_nothing(db_url: str) -> None:
    engine = Engine(db_url, clock=ManualClock())
    engine.register(workflow("tiny").task("a", lambda x: x + 1).build())
    engine.execute("tiny", 1)
    engine.close()
    raised: list[tuple[type[BaseException], str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            engine.execute("tiny", 2)
        except Exception as exc:  # checked below; its traceback must not keep the engine alive
            raised.append((type(exc), str(exc)))
        del engine  # nothing of it may outlive this test (a failure keeps the frame alive)
        messages: list[str] = []
        for _ in range(3):  # a recorded warning may hold its source (and so the engine) alive
            gc.collect()
            messages += [str(w.message) for w in caught]
            caught.clear()
    reopened = Engine(db_url, clock=ManualClock())
    try:
        stored = len(reopened.list())
    finally:
        reopened.close()
    assert len(raised) == 1 and issubclass(raised[0][0], StatemachineError), raised
    assert messages == []
    assert stored == 1


def test_close_inside_a_running_event_loop_stops_every_thread(db_url: str) -> None:
    """A FastAPI lifespan or an async main closes its engine from a coroutine: our loop is
    wound down without running it on the caller's thread, and no thread of ours is left."""
    before = set(threading.enumerate())

    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def main() -> tuple[int, str]:
        engine = Engine(db_url)
        engine.register(workflow("tiny").task("a", lambda x: x + 1).task("b", twice).build())
        done = engine.execute("tiny", 1)
        iid = engine.start("tiny", 2)
        with engine.worker(concurrency=2, poll_interval="20ms"):
            worked = engine.wait(iid, timeout=30)
        engine.close()
        return done.output, worked.status

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(main()) == (4, "completed")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
    deadline = time.monotonic() + 10  # idle pool threads end on their own, soon after close
    while time.monotonic() < deadline:
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert left == []
