"""Engine lifecycle: closing an engine releases what it opened."""

from __future__ import annotations

import gc
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
