"""Dead-lettering: an instance whose step kills its worker every time stops taking workers down.

Each run of ``programs/worker_deadletter.py`` is a new worker process (lease 1 s,
``max_recoveries=2``) calling ``run_due``; step ``die`` ends it with ``os._exit(1)``. The first
claim is a plain start, the next two are recoveries of a dead worker's lease; the fourth process
finds the recovery count over the limit and marks the instance ``failed`` (``DeadLettered``)
without running the step again.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pytest

from statemachine import Engine
from statemachine.engine import EngineSettings
from tests.integration.programs import worker_deadletter as wd
from tests.integration.programs.worker_support import Proc, read_lines

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
    pytest.mark.slow,
]  # slow: run first (conftest)


def test_an_instance_that_kills_every_worker_is_dead_lettered(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    engine = Engine(db_url, settings=wd.SETTINGS)
    procs: list[Proc] = []
    try:
        wd.setup(engine, log)
        engine.start(wd.WORKFLOW, {}, instance_id=wd.INSTANCE)

        for death in range(1, 4):
            proc = Proc.program("worker_deadletter", [db_url, str(log)], tmp_path, f"w{death}")
            procs.append(proc)
            rc = proc.wait(timeout=40)
            assert rc == 1, f"worker {death} should have died in step die\n{proc.describe()}"
            dies = [line for line in read_lines(log) if "/die/" in line]
            assert dies[-1] == f"{wd.INSTANCE}/die/{proc.pid}"
            assert len(dies) == death
            inst = engine.get(wd.INSTANCE)
            assert inst.status == "running"
            assert inst.step_results["die"].status == "running"

        # the next worker dead-letters it instead of running step die a fourth time
        proc = Proc.program("worker_deadletter", [db_url, str(log)], tmp_path, "w4")
        procs.append(proc)
        rc = proc.wait(timeout=40)
        assert rc == 0, proc.describe()
        seen = json.loads(proc.stdout().strip().splitlines()[-1])
        assert seen["status"] == "failed"
        assert seen["error"]["type"] == "DeadLettered"

        inst = engine.get(wd.INSTANCE)
        assert inst.status == "failed"
        assert inst.error is not None
        assert inst.error["type"] == "DeadLettered"
        assert inst.completed_at is not None
        runs = read_lines(log)
        assert [line.split("/")[1] for line in runs] == ["ok", "die", "die", "die"]
        kinds = [(h.type, h.step) for h in engine.history(wd.INSTANCE)]
        assert kinds.count(("workflow.step.completed", "ok")) == 1
        assert ("workflow.step.completed", "die") not in kinds
        assert kinds[-1][0] == "workflow.failed"
        assert kinds.count(("workflow.failed", kinds[-1][1])) == 1
        rec = engine.store.get(wd.INSTANCE)
        assert rec is not None and rec.lease_owner is None
        assert engine.run_due() == 0  # a failed instance is not due any more
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()


def test_the_lease_keyword_is_not_ignored_next_to_settings(sqlite_url: str) -> None:
    engine = Engine(sqlite_url, lease="1s", settings=EngineSettings(max_recoveries=2))
    try:
        assert engine.settings.max_recoveries == 2
        assert engine.settings.lease == 1.0
    finally:
        engine.close()


def test_retry_of_a_dead_lettered_instance_clears_its_recovery_count(
    db_url: str, tmp_path: Path
) -> None:
    """After ``engine.retry`` the instance may die as often as a fresh one before it is
    dead-lettered again: the next crash is recovered (step ``die`` runs again), not dead-lettered."""
    log = tmp_path / "runs.log"
    engine = Engine(db_url, settings=wd.SETTINGS)
    procs: list[Proc] = []

    def worker(name: str) -> tuple[int, Proc]:
        proc = Proc.program("worker_deadletter", [db_url, str(log)], tmp_path, name)
        procs.append(proc)
        return proc.wait(timeout=40), proc

    try:
        wd.setup(engine, log)
        engine.start(wd.WORKFLOW, {}, instance_id=wd.INSTANCE)
        for death in range(1, 4):  # a start, then two recoveries: each worker dies in die
            rc, proc = worker(f"w{death}")
            assert rc == 1, proc.describe()
        rc, proc = worker("w4")  # over max_recoveries=2: dead-lettered
        assert rc == 0, proc.describe()
        error = engine.get(wd.INSTANCE).error
        assert error is not None and error["type"] == "DeadLettered"

        engine.retry(wd.INSTANCE)
        rc, proc = worker("w5")  # claims the retried instance, runs die: dies
        assert rc == 1, proc.describe()
        rc, proc = worker("w6")  # a first recovery since the retry: die runs again
        assert rc == 1, f"the instance was dead-lettered again at once\n{proc.describe()}"
        dies = [line for line in read_lines(log) if "/die/" in line]
        assert len(dies) == 5
        assert dies[-1] == f"{wd.INSTANCE}/die/{proc.pid}"
        inst = engine.get(wd.INSTANCE)
        assert inst.status == "running"
        assert inst.step_results["ok"].attempts == 1  # completed steps are not run again
        rec = engine.store.get(wd.INSTANCE)
        assert rec is not None and rec.recoveries == 1  # w6's, counted from 0 by the retry
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()
