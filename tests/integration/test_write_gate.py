"""The SQLite write gate: a committer waits while another process holds it, and gets it the
moment that process lets go or dies (the kernel drops a dead process's flock)."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from statemachine import Engine, workflow
from statemachine.store.gate import WriteGate

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

# holds the gate of the database URL given as argv[1]; "release" on stdin lets go, then it idles
HOLDER = """
import sys, time
from sqlalchemy.engine import make_url
from statemachine.store.gate import WriteGate
gate = WriteGate(make_url(sys.argv[1]))
with gate.hold():
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
time.sleep(600)
"""


def _holder(db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"sqlite:///{db}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)  # reaps it and closes its pipes


def _in_thread(fn: Any) -> tuple[threading.Thread, threading.Event, list[Any]]:
    done, out = threading.Event(), []

    def run() -> None:
        out.append(fn())
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, out


def _double(data: Any) -> Any:
    return {"n": data["n"] * 2}


def test_a_commit_waits_for_another_process_holding_the_gate_and_goes_on_when_it_is_killed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gate.db"
    engine = Engine(f"sqlite:///{db}")
    holder: subprocess.Popen[str] | None = None
    try:
        engine.register(workflow("double").task("double", _double).build())
        assert (tmp_path / "gate.db.gate").exists()  # made with the committer, next to the file
        holder = _holder(db)
        thread, done, out = _in_thread(lambda: engine.execute("double", {"n": 21}))
        # blocked, not failed: nothing can commit while the other process holds the gate
        assert not done.wait(0.5)
        assert engine.list(workflow="double") == []
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert done.wait(30), "the commit never got the gate after its holder died"
        thread.join(timeout=5)
        assert out[0].status == "completed"
        assert out[0].output == {"n": 42}
    finally:
        if holder is not None:
            _stop(holder)
        engine.close()
        gc.collect()


def test_the_gate_passes_to_the_waiter_when_the_holder_releases_it(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    holder = _holder(db)
    gate = WriteGate(make_url(f"sqlite:///{db}"))
    try:

        def take() -> bool:
            with gate.hold():
                return True

        thread, done, out = _in_thread(take)
        assert not done.wait(0.3)  # the other process holds it
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert done.wait(30), "the waiter never got the gate after it was released"
        thread.join(timeout=5)
        assert out == [True]
        # the holder's process lives on, without the gate: taking it again does not wait
        thread, done, _ = _in_thread(take)
        assert done.wait(30)
    finally:
        _stop(holder)
        gate.close()


@pytest.mark.parametrize(
    "url",
    [
        None,
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:mem1?mode=memory&cache=shared&uri=true",
        "sqlite:///file:shared.db?uri=true",  # a URI filename: its path is not a plain one
    ],
)
def test_no_gate_file_without_a_plain_database_file(
    url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    gate = WriteGate(None if url is None else make_url(url))
    assert gate._fd is None
    with gate.hold():  # still orders this process's threads
        assert gate._threads.locked()
    gate.close()
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_cannot_hold_the_gate_file_leaves_only_sqlites_lock(
    tmp_path: Path,
) -> None:
    gate = WriteGate(make_url(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))  # no such directory
    with gate.hold():
        pass
    assert not (tmp_path / "missing").exists()
    gate.close()
