"""Every public call keeps store errors in the family: a SQLite file locked by another process
gives a ``StoreError`` that says so and what to do, never a raw SQLAlchemy or DB-API error."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, workflow
from statemachine.engine import EngineSettings
from statemachine.errors import StoreError

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.rollback()
"""


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Starts another process that holds the file's write lock (``BEGIN IMMEDIATE``), as a
    worker stuck in a transaction or a ``sqlite3`` shell would; released on teardown."""
    held: list[subprocess.Popen[str]] = []

    def hold() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "test.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        held.append(proc)
        return proc

    yield hold
    for proc in held:
        assert proc.stdin is not None and proc.stdout is not None
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def _calls(engine: Engine, iid: str, failed: str) -> dict[str, Callable[[], Any]]:
    """Every public method of the engine that touches the database, with valid arguments."""
    another = workflow("another").task("a", handler="noop").build()
    return {
        "register": lambda: engine.register(another),
        "start": lambda: engine.start("plain", {"n": 1}),
        "execute": lambda: engine.execute("plain", {"n": 2}),
        "get": lambda: engine.get(iid),
        "list": lambda: engine.list(),
        "history": lambda: engine.history(iid),
        "send_event": lambda: engine.send_event(iid, "go", {"x": 1}),
        "emit": lambda: engine.emit("Thing.happened", {"n": 3}),
        "pause": lambda: engine.pause(iid),
        "resume": lambda: engine.resume(iid),
        "cancel": lambda: engine.cancel(iid),
        "retry": lambda: engine.retry(failed),
        "replay": lambda: engine.replay(iid),
        "update_metadata": lambda: engine.update_metadata(iid, {"k": "v"}),
        "run_due": lambda: engine.run_due(),
        "wait": lambda: engine.wait(iid, timeout=0.5),
        "prune": lambda: engine.prune("1d"),
    }


def test_every_public_write_on_a_locked_sqlite_file_raises_store_error(
    tmp_path: Path, locked: Callable[[], subprocess.Popen[str]]
) -> None:
    url = f"sqlite:///{tmp_path}/test.db"
    engine = Engine(url, settings=EngineSettings(busy_timeout=0.3))
    try:

        def broken(_: Any) -> None:
            raise RuntimeError("no")

        engine.register(workflow("plain").wait("w", event="go").build())
        engine.register(workflow("broken").task("a", broken).build())
        engine.register(workflow("triggered").trigger("Thing.happened").end("done").build())
        iid = engine.start("plain", {"n": 0})
        failed = engine.execute("broken", {}).id
        calls = _calls(engine, iid, failed)
        locked()
        outcomes: dict[str, str] = {}
        for name, call in calls.items():
            try:
                call()
                outcomes[name] = "returned"
            except StoreError as exc:
                message = str(exc)
                assert "locked" in message and "try again" in message, (name, message)
                assert exc.__cause__ is not None, name  # the driver's error is kept
                outcomes[name] = "StoreError"
            except Exception as exc:  # a raw driver error, or another type
                outcomes[name] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:200]
        # reads are snapshot transactions on SQLite: they never wait for a writer, so they
        # answer as they would without the lock (test_sqlite_reads); every write is refused
        # with a StoreError that says what to do, never a raw driver error
        reads = {"get": "returned", "list": "returned", "history": "returned"}
        reads["wait"] = f"builtins.TimeoutError: instance {iid} is still pending after 0.5s"
        # a control call reads the status first (no wait): the pause above was refused, so a
        # resume of a pending instance is refused for that, before it would need the lock
        reads["resume"] = (
            f"statemachine.errors.InvalidTransition: cannot resume instance {iid}: it is "
            "pending (allowed when paused)"
        )
        reads["run_due"] = "returned"  # nothing it could claim: it ran nothing, said so in its log
        assert outcomes == {**dict.fromkeys(calls, "StoreError"), **reads}
        with pytest.raises(StoreError, match="locked"):  # a new engine on the locked file, too
            Engine(url, settings=EngineSettings(busy_timeout=0.3)).close()
    finally:
        engine.close()
        gc.collect()


def test_the_lock_released_every_call_works_again(
    tmp_path: Path, locked: Callable[[], subprocess.Popen[str]]
) -> None:
    """A StoreError for a lock is transient: the same engine goes on once the lock is gone."""
    url = f"sqlite:///{tmp_path}/test.db"
    engine = Engine(url, settings=EngineSettings(busy_timeout=0.3))
    try:
        engine.register(workflow("plain").end("done").build())
        proc = locked()
        with pytest.raises(StoreError):
            engine.start("plain", {})
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        iid = engine.start("plain", {})
        assert engine.run_due() == 1
        assert engine.get(iid).status == "completed"
    finally:
        engine.close()
        gc.collect()
