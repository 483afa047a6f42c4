"""Crash recovery with real processes: SIGKILL a worker mid-step and mid-backoff, then recover.

The worker is ``programs/crash_worker.py`` in a subprocess; recovery runs in a NEW Engine in this
process, on the same database, once the dead worker's lease (1 s) has expired.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, WorkflowInstance
from tests.integration.programs import crash_worker as cw

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

WORKER = Path(cw.__file__)
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(mode: str, db_url: str, markers: Path, log: Path) -> Iterator[Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), mode, db_url, str(markers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def wait_for(
    what: str, check: Callable[[], bool], proc: Any, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


def sigkill(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def recover(engine: Engine, iid: str, timeout: float = 30) -> WorkflowInstance:
    """Run what is due, as any surviving process would, until the instance ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.run_due()
        inst = engine.get(iid)
        if inst.is_terminal:
            return inst
        time.sleep(0.05)
    raise AssertionError(f"{iid} did not finish: {engine.get(iid)}")


def test_sigkill_during_a_step_reruns_only_that_step(db_url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "worker.log"

    with worker_process("steps", db_url, markers, log) as proc:
        wait_for("step 3 to start", lambda: bool(cw.read_markers(markers, "step3")), proc, log)
        sigkill(proc)
    killed_at = time.monotonic()

    engine = Engine(db_url, lease="1s")
    try:
        cw.setup(engine, markers, hang=False)
        inst = engine.get(cw.STEPS_INSTANCE)
        assert inst.status == "running"  # the dead worker left it mid-step
        assert inst.step_results["step1"].status == "completed"
        assert inst.step_results["step2"].status == "completed"
        assert inst.step_results["step3"].status == "running"
        assert "step4" not in inst.step_results or inst.step_results["step4"].status == "pending"

        inst = recover(engine, cw.STEPS_INSTANCE)
        # nothing could be taken over before the dead worker's lease ran out
        assert time.monotonic() - killed_at >= 0.5

        assert inst.status == "completed", inst.error
        assert inst.output is not None
        assert inst.output["result"] == 25  # ((1 + 1) * 10) + 5
        assert re.fullmatch(rf"{cw.STEPS_INSTANCE}/step3/\d+", inst.output["step3_key"])
        ran = {s: cw.read_markers(markers, s) for s in ("step1", "step2", "step3", "step4")}
        assert len(ran["step1"]) == 1  # completed steps never run again
        assert len(ran["step2"]) == 1
        assert len(ran["step4"]) == 1
        assert len(ran["step3"]) == 2  # the interrupted step ran again
        first, second = ran["step3"]
        assert first["pid"] != second["pid"]
        assert first["key"] == second["key"] == inst.output["step3_key"]
        # a process dying is not a failed attempt
        assert first["attempt"] == second["attempt"] == 1
        assert inst.step_results["step3"].attempts == 1
        assert inst.step_results["step3"].output == {"n": 25, "key": first["key"]}

        history = engine.history(cw.STEPS_INSTANCE)
        seqs = [h.seq for h in history]
        assert seqs == sorted(set(seqs))
        types = [(h.type, h.step) for h in history]
        assert types.count(("workflow.started", None)) == 1
        assert types.count(("workflow.completed", None)) == 1
        for step in ("step1", "step2", "step3", "step4"):
            assert types.count(("workflow.step.completed", step)) == 1
    finally:
        engine.close()
        gc.collect()


def test_sigkill_during_a_backoff_keeps_attempts_and_delay(db_url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "worker.log"
    interval = timedelta(seconds=cw.BACKOFF_INTERVAL)

    observer = Engine(db_url, lease="1s")
    try:
        with worker_process("backoff", db_url, markers, log) as proc:

            def in_backoff() -> bool:
                if not cw.read_markers(markers, "flaky"):
                    return False
                try:
                    step = observer.get(cw.BACKOFF_INSTANCE).step_results.get("flaky")
                except Exception:
                    return False
                return step is not None and step.next_attempt_at is not None

            wait_for("the first attempt to fail", in_backoff, proc, log)
            sigkill(proc)

        [failed] = cw.read_markers(markers, "flaky")
        assert failed["attempt"] == 1
        inst = observer.get(cw.BACKOFF_INSTANCE)
        step = inst.step_results["flaky"]
        assert inst.status == "waiting"
        assert step.attempts == 1
        assert step.next_attempt_at is not None
        failed_at = datetime.fromtimestamp(failed["time"], UTC)
        # the persisted retry time is the failure time plus the first interval
        assert abs((step.next_attempt_at - failed_at) - interval) < timedelta(seconds=1)
        due_at = step.next_attempt_at
    finally:
        observer.close()
        gc.collect()

    engine = Engine(db_url, lease="1s")  # a new engine after the crash: the backoff still holds
    try:
        cw.setup(engine, markers, hang=False)
        if datetime.now(UTC) < due_at - timedelta(seconds=1):
            assert engine.run_due() == 0
            assert len(cw.read_markers(markers, "flaky")) == 1
        inst = recover(engine, cw.BACKOFF_INSTANCE)
        assert inst.status == "completed", inst.error
        assert inst.output == {"attempt": 2}  # the count went on: not reset to 1
        assert inst.step_results["flaky"].attempts == 2
        calls = cw.read_markers(markers, "flaky")
        assert [c["attempt"] for c in calls] == [1, 2]
        assert calls[0]["key"] == calls[1]["key"]
        retried_at = datetime.fromtimestamp(calls[1]["time"], UTC)
        assert retried_at >= due_at - timedelta(milliseconds=50)  # the backoff was not skipped
        assert len(cw.read_markers(markers, "prep")) == 1
        retries = [
            h for h in engine.history(cw.BACKOFF_INSTANCE) if h.type == "workflow.step.retry"
        ]
        assert len(retries) == 1
    finally:
        engine.close()
        gc.collect()
