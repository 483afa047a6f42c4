"""Fencing: a worker paused past its lease cannot overwrite the progress of the one that took over.

Worker A (``programs/worker_fencing.py``, lease 1 s) starts step ``slow``; the test SIGSTOPs it as
soon as the step's log line appears, waits past the lease, and lets engine B (in this process)
``run_due``: B takes the instance over, runs ``slow`` again and finishes the workflow. Then A is
SIGCONTed with its stale result in hand. Its writes are fenced on the lease epoch, so it must
change nothing: one ``workflow.step.completed`` per step, B's output, B's step results.

Two modes: as shipped (A's heartbeat notices the loss first) and with A's heartbeats disabled,
so that the stale result reaches the fenced commit itself.

The converse: a live worker's step that runs longer than the lease is not taken over by the
other workers polling the same database (heartbeats extend the lease).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from statemachine import Engine
from tests.integration.programs import worker_fencing as wf
from tests.integration.programs.worker_support import Proc, read_lines, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")

IID = "fenced-1"


@pytest.mark.parametrize("mode", ["heartbeat", "commit"])
def test_a_worker_paused_past_its_lease_cannot_commit(
    db_url: str, tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "runs.log"
    me = os.getpid()
    b = Engine(db_url, worker_id="B", lease="30s")
    a = None
    try:
        wf.setup(b, log, slow_seconds=0.2)
        a = Proc.program("worker_fencing", [mode, db_url, str(log), IID], tmp_path, "A")
        wait_until("A to start step slow", lambda: bool(read_lines(log)) or not a.alive(), 30)
        a.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert a.alive(), a.describe()
        [first] = read_lines(log)
        assert first == f"{IID}/slow/{a.pid}"
        inst = b.get(IID)
        assert inst.status == "running"
        assert inst.step_results["slow"].status == "running"

        # B takes over once A's lease (1 s) has run out, and finishes the instance
        time.sleep(1.3)
        deadline = time.monotonic() + 20
        while not b.get(IID).is_terminal:
            assert time.monotonic() < deadline, "B never took the instance over"
            b.run_due()
            time.sleep(0.05)
        inst = b.get(IID)
        assert inst.status == "completed", inst.error
        assert inst.output == {"slow_by": me, "finish_by": me}
        assert read_lines(log) == [f"{IID}/slow/{a.pid}", f"{IID}/slow/{me}", f"{IID}/finish/{me}"]

        # A wakes up after its handler's sleep is over, result in hand: it must be refused
        time.sleep(max(0.0, stopped_at + wf.SLOW_SECONDS + 0.2 - time.monotonic()))
        a.signal(signal.SIGCONT)
        rc = a.wait(timeout=15)
        assert rc == 0, a.describe()
        seen = json.loads(a.stdout().strip().splitlines()[-1])
        assert seen == {"status": "completed", "output": {"slow_by": me, "finish_by": me}}
        assert f"lease on {IID} lost" in a.stderr(), a.describe()

        # nothing of A's late result is stored
        assert len(read_lines(log)) == 3, read_lines(log)  # A did not go on to run `finish`
        inst = b.get(IID)
        assert inst.status == "completed"
        assert inst.output == {"slow_by": me, "finish_by": me}
        assert inst.step_results["slow"].output == {"by": me}
        assert inst.step_results["finish"].output == {"slow_by": me, "finish_by": me}
        history = b.history(IID)
        seqs = [h.seq for h in history]
        assert seqs == list(range(1, len(seqs) + 1))
        kinds = [(h.type, h.step) for h in history]
        assert kinds.count(("workflow.step.completed", "slow")) == 1, kinds
        assert kinds.count(("workflow.step.completed", "finish")) == 1, kinds
        assert kinds.count(("workflow.completed", None)) == 1, kinds
        [slow_done] = [
            h for h in history if h.type == "workflow.step.completed" and h.step == "slow"
        ]
        assert slow_done.data.get("output") == {"by": me}, slow_done.data
        rec = b.store.get(IID)
        assert rec is not None and rec.lease_owner is None
    finally:
        if a is not None:
            a.cleanup()
        b.close()
        gc.collect()


def test_a_live_workers_long_step_is_not_taken_over(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    engine = Engine(db_url)
    procs: list[Proc] = []
    try:
        wf.setup(engine, log)
        engine.start(wf.WORKFLOW, {}, instance_id=IID)
        for name in ("W1", "W2"):
            procs.append(
                Proc.program("worker_fencing", ["worker", db_url, str(log), IID], tmp_path, name)
            )
        inst = engine.wait(IID, timeout=30)
        assert inst.status == "completed", inst.error
        runs = read_lines(log)
        assert [line.split("/")[1] for line in runs] == ["slow", "finish"], runs
        kinds = [(h.type, h.step) for h in engine.history(IID)]
        assert kinds.count(("workflow.step.started", "slow")) == 1, kinds
        assert kinds.count(("workflow.step.completed", "slow")) == 1, kinds
        rec = engine.store.get(IID)
        assert rec is not None and rec.recoveries == 0
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()
