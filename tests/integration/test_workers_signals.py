"""Graceful stop of ``statemachine worker``: SIGTERM or SIGINT while a step runs.

The running step finishes and is recorded, no further step starts, the lease is released (so
another worker can go on at once instead of waiting for it to expire, and without counting a
recovery), and the process exits 0 within a few seconds. Another engine then finishes the
instance without running the recorded step again.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, load_yaml
from tests.integration.programs import worker_signals as ws
from tests.integration.programs.worker_support import Proc, read_lines, wait_until

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.slow,
]  # slow: run first (conftest)

IID = "sig-1"
ACTIONS = "tests.integration.programs.worker_signals:SignalActions"
EXIT_WITHIN = ws.SLOW_SECONDS + 3.0  # seconds from the signal to the process's exit


def test_sigterm_finishes_the_running_step_releases_and_exits_0(
    db_url: str, tmp_path: Path
) -> None:
    _graceful_stop(db_url, tmp_path, signal.SIGTERM)


def test_sigint_finishes_the_running_step_releases_and_exits_0(
    sqlite_url: str, tmp_path: Path
) -> None:
    _graceful_stop(sqlite_url, tmp_path, signal.SIGINT)  # the same code path: one backend will do


def _graceful_stop(db_url: str, tmp_path: Path, sig: signal.Signals) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "signals.yaml").write_text(ws.DEFINITION)
    log = tmp_path / "runs.log"
    engine = Engine(db_url)
    worker = None
    try:
        engine.register(load_yaml(defs / "signals.yaml"), check_actions=False)
        engine.start(ws.WORKFLOW, {}, instance_id=IID)
        args = [sys.executable, "-m", "statemachine", "worker", "--db", db_url,
                "--definitions", str(defs), "--actions", ACTIONS,
                "--concurrency", "2", "--poll-interval", "100ms"]  # fmt: skip
        env = {"SM_SIGNALS_LOG": str(log), "SM_SIGNALS_AFTER_SECONDS": "30"}
        worker = Proc(args, tmp_path, "worker", env=env)
        wait_until("step slow to start", lambda: bool(read_lines(log)) or not worker.alive(), 30)
        assert worker.alive(), worker.describe()
        worker.signal(sig)
        signalled = time.monotonic()
        try:
            rc = worker.wait(timeout=EXIT_WITHIN + 1)
        except Exception:
            pytest.fail(
                f"the worker did not exit within {EXIT_WITHIN + 1}s of {sig.name}; "
                f"handlers run: {read_lines(log)}\n{worker.describe()}"
            )
        took = time.monotonic() - signalled
        assert rc == 0, worker.describe()
        assert "Traceback" not in worker.stderr(), worker.describe()
        assert took <= EXIT_WITHIN, f"exit took {took:.1f}s\n{worker.describe()}"

        # the running step finished and was recorded; no handler started after it; lease freed
        assert read_lines(log) == [f"{IID}/slow/{worker.pid}"]
        inst = engine.get(IID)
        assert inst.step_results["slow"].status == "completed"
        assert inst.step_results["slow"].output == {"slow_by": worker.pid}
        kinds = [(h.type, h.step) for h in engine.history(IID)]
        assert kinds.count(("workflow.step.completed", "slow")) == 1
        rec = engine.store.get(IID)
        assert rec is not None
        assert rec.lease_owner is None, (rec.lease_owner, rec.lease_expires_at)

        # another engine goes on at once, from the next step
        def after(data: Any) -> str:
            return "after-here"

        engine.action("slow")(lambda data: pytest.fail("slow ran again"))
        engine.action("after")(after)
        engine.register(load_yaml(defs / "signals.yaml"))
        engine.run_due()
        inst = engine.get(IID)
        assert inst.status == "completed", (inst.status, inst.error)
        assert inst.output == "after-here"
        assert engine.store.get(IID).recoveries == 0  # type: ignore[union-attr]
    finally:
        if worker is not None:
            worker.cleanup()
        engine.close()
        gc.collect()


def test_a_handlers_sys_exit_stops_the_worker_as_sigterm_does(db_url: str, tmp_path: Path) -> None:
    """``sys.exit(3)`` in one instance's handler: the worker stops gracefully (the other
    instance's running step finishes and is recorded, nothing new starts), exits 0, and both
    instances are left for another engine, at once."""
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "signals.yaml").write_text(ws.DEFINITION)
    (defs / "exits.yaml").write_text(ws.EXIT_DEFINITION)
    log = tmp_path / "runs.log"
    engine = Engine(db_url)
    worker = None
    try:
        engine.register(load_yaml(defs / "signals.yaml"), check_actions=False)
        engine.register(load_yaml(defs / "exits.yaml"), check_actions=False)
        engine.start(ws.WORKFLOW, {}, instance_id=IID)
        engine.start(ws.EXIT_WORKFLOW, {}, instance_id="exit-1")
        args = [sys.executable, "-m", "statemachine", "worker", "--db", db_url,
                "--definitions", str(defs), "--actions", ACTIONS,
                "--concurrency", "2", "--poll-interval", "100ms"]  # fmt: skip
        env = {"SM_SIGNALS_LOG": str(log), "SM_SIGNALS_AFTER_SECONDS": "30"}
        worker = Proc(args, tmp_path, "worker", env=env)
        try:
            rc = worker.wait(timeout=30 + EXIT_WITHIN)
        except Exception:
            pytest.fail(
                f"the worker did not stop; handlers run: {read_lines(log)}\n{worker.describe()}"
            )
        assert rc == 0, worker.describe()
        assert "Traceback" not in worker.stderr(), worker.describe()
        assert sorted(read_lines(log)) == sorted(
            [f"{IID}/slow/{worker.pid}", f"exit-1/bye/{worker.pid}"]
        )
        inst = engine.get(IID)
        assert inst.step_results["slow"].status == "completed"
        for iid in (IID, "exit-1"):
            rec = engine.store.get(iid)
            assert rec is not None and rec.lease_owner is None and rec.status == "running"

        engine.action("slow")(lambda data: pytest.fail("slow ran again"))
        engine.action("after")(lambda data: "after-here")
        engine.action("exits")(lambda data: "stayed")
        engine.register(load_yaml(defs / "signals.yaml"))
        engine.register(load_yaml(defs / "exits.yaml"))
        engine.run_due()
        assert engine.get(IID).output == "after-here"
        assert engine.get("exit-1").output == "stayed"
    finally:
        if worker is not None:
            worker.cleanup()
        engine.close()
        gc.collect()


# -- steps longer than the lease: --grace ------------------------------------------------------
PATIENT = "pat-1"


def _patient(db_url: str, tmp_path: Path) -> tuple[Engine, Path, Path]:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "patient.yaml").write_text(ws.PATIENT_DEFINITION)
    engine = Engine(db_url)
    engine.register(load_yaml(defs / "patient.yaml"), check_actions=False)
    engine.start(ws.PATIENT_WORKFLOW, {}, instance_id=PATIENT)
    return engine, defs, tmp_path / "runs.log"


def _cli_worker(db_url: str, defs: Path, log: Path, tmp_path: Path, name: str, *extra: str) -> Proc:
    args = [sys.executable, "-m", "statemachine", "worker", "--db", db_url,
            "--definitions", str(defs), "--actions", ACTIONS,
            "--concurrency", "2", "--poll-interval", "100ms", *extra]  # fmt: skip
    return Proc(args, tmp_path, name, env={"SM_SIGNALS_LOG": str(log)})


def _ready(proc: Proc) -> None:
    wait_until(f"{proc.name} ready", lambda: "workflows" in proc.stderr() or not proc.alive(), 30)
    assert proc.alive(), proc.describe()


def _long_runs(log: Path) -> list[str]:
    return [line for line in read_lines(log) if "/long/" in line]


def test_sigterm_keeps_the_lease_of_a_step_longer_than_it_until_the_step_ends(
    db_url: str, tmp_path: Path
) -> None:
    """A 5 s step, a 2 s lease, SIGTERM a moment after the step began: the stopping worker
    keeps renewing its lease while the step runs (``--grace`` is 30 s by default), records
    the result and exits 0; a second worker, polling all along, never runs the step again."""
    engine, defs, log = _patient(db_url, tmp_path)
    first = second = None
    try:
        first = _cli_worker(db_url, defs, log, tmp_path, "first", "--lease", "2s")
        wait_until("long to start", lambda: bool(_long_runs(log)) or not first.alive(), 30)
        second = _cli_worker(db_url, defs, log, tmp_path, "second", "--lease", "2s")
        _ready(second)
        assert _long_runs(log) == [f"{PATIENT}/long/{first.pid}"], first.describe()
        first.signal(signal.SIGTERM)
        rc = first.wait(timeout=ws.LONG_SECONDS + 10)
        assert rc == 0, first.describe()
        assert "Traceback" not in first.stderr(), first.describe()

        inst = engine.wait(PATIENT, timeout=30)  # the second worker runs "after"
        assert inst.status == "completed", (inst.status, inst.error)
        assert _long_runs(log) == [f"{PATIENT}/long/{first.pid}"], second.describe()
        assert inst.step_results["long"].output == {"long_by": first.pid}
        kinds = [(h.type, h.step) for h in engine.history(PATIENT)]
        assert kinds.count(("workflow.step.completed", "long")) == 1
        assert engine.store.get(PATIENT).recoveries == 0  # type: ignore[union-attr]
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0, second.describe()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.cleanup()
        engine.close()
        gc.collect()


@pytest.mark.parametrize("how", ["grace", "second-signal"])
def test_a_step_cut_off_by_the_grace_is_taken_over_at_once(
    sqlite_url: str, tmp_path: Path, how: str
) -> None:
    """``--grace 1s`` (or a second SIGTERM): the stopping worker gives the running step up and
    releases its lease as it exits, within a second or two, without waiting for the step's
    thread; another worker takes the instance over at once, not after the lease (10 s here,
    so a takeover by expiry would come too late), and the step runs twice, no more."""
    engine, defs, log = _patient(sqlite_url, tmp_path)
    first = second = None
    extra = ("--lease", "10s", "--grace", "1s" if how == "grace" else "30s")
    try:
        first = _cli_worker(sqlite_url, defs, log, tmp_path, "first", *extra)
        wait_until("long to start", lambda: bool(_long_runs(log)) or not first.alive(), 30)
        second = _cli_worker(sqlite_url, defs, log, tmp_path, "second", "--lease", "10s")
        _ready(second)
        first.signal(signal.SIGTERM)
        signalled = time.monotonic()
        if how == "second-signal":
            time.sleep(0.3)
            first.signal(signal.SIGTERM)
        rc = first.wait(timeout=15)
        took = time.monotonic() - signalled
        assert rc == 0, first.describe()
        assert "Traceback" not in first.stderr(), first.describe()
        assert took < ws.LONG_SECONDS - 1, f"exit took {took:.1f}s\n{first.describe()}"
        assert "still running after" in first.stderr(), first.describe()

        wait_until("the takeover", lambda: len(_long_runs(log)) == 2, 5)  # < the 10 s lease
        inst = engine.wait(PATIENT, timeout=30)
        assert inst.status == "completed", (inst.status, inst.error)
        assert _long_runs(log) == [f"{PATIENT}/long/{first.pid}", f"{PATIENT}/long/{second.pid}"]
        assert inst.step_results["long"].output == {"long_by": second.pid}
        kinds = [(h.type, h.step) for h in engine.history(PATIENT)]
        assert kinds.count(("workflow.step.completed", "long")) == 1
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0, second.describe()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.cleanup()
        engine.close()
        gc.collect()
