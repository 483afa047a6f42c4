"""Migration of an instance whose task a worker process is running at that moment: the worker
loses its lease (its late result is refused, nothing half applied) and the step runs again on
the new version, at least once as after a crash (engine/migration.py)."""

from __future__ import annotations

import gc
import signal
from pathlib import Path

from statemachine import Engine
from tests.integration.migration_support import migrated_entry, stored
from tests.integration.programs import worker_migration as wf
from tests.integration.programs.worker_support import Proc, read_lines, wait_until

IID = "mig-1"


def test_a_task_running_on_a_worker_process_moves_and_its_late_result_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    log, flag = tmp_path / "runs.log", tmp_path / "go"
    engine = Engine(db_url)
    worker = None
    try:
        engine.register(wf.version(1), check_actions=False)
        engine.start(wf.WORKFLOW, {}, instance_id=IID)
        worker = Proc.program("worker_migration", [db_url, str(log), str(flag)], tmp_path, "w")
        wait_until("the worker to run step slow", lambda: bool(read_lines(log)), 60)
        assert engine.get(IID).step_results["slow"].status == "running"

        v2 = wf.version(2)
        plan = engine.plan_migration(wf.WORKFLOW, to=v2)
        assert [(c.instance_id, c.ok) for c in plan.report] == [(IID, True)]
        assert engine.migrate(plan) == [IID]
        assert engine.get(IID).definition_hash == v2.hash
        flag.touch()  # the old handler returns now: its result must be refused

        wait_until("the instance to complete", lambda: engine.get(IID).is_terminal, 60)
        inst = engine.get(IID)
        assert inst.status == "completed", (inst.error, worker.describe())
        assert inst.step_results["slow"].output == {"by": "new"}
        assert inst.output == {"slow": {"by": "new"}}
        steps = [line.split("/")[1] for line in read_lines(log)]
        assert steps == ["old", "new", "after"], steps
        kinds = [(h.type, h.step) for h in engine.history(IID)]
        assert ("workflow.step.completed", "slow") in kinds
        done = [h for h in engine.history(IID) if h.type == "workflow.step.completed"]
        assert all(h.data.get("output") != {"by": "old"} for h in done), done
        entry = migrated_entry(engine, IID)
        assert (entry["from_version"], entry["to_version"]) == ("1", "2")
        assert entry["to_hash"] == v2.hash
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
    finally:
        if worker is not None:
            worker.cleanup()
        engine.close()
        gc.collect()


def test_a_task_running_on_a_worker_process_that_cannot_move_is_left_to_finish(
    db_url: str, tmp_path: Path
) -> None:
    log, flag = tmp_path / "runs.log", tmp_path / "go"
    engine = Engine(db_url)
    worker = None
    try:
        engine.register(wf.version(1), check_actions=False)
        engine.start(wf.WORKFLOW, {}, instance_id=IID)
        worker = Proc.program(
            "worker_migration", [db_url, str(log), str(flag)], tmp_path, "w",
            env={"MIGRATION_LEASE": "120s"},  # no heartbeat rewrites the row meanwhile
        )  # fmt: skip
        wait_until("the worker to run step slow", lambda: bool(read_lines(log)), 60)
        before = stored(db_url, IID)
        plan = engine.plan_migration(wf.WORKFLOW, to=wf.version(3))
        [check] = plan.report
        assert not check.ok
        assert check.reasons == (
            "step 'slow' is running and version 3 has no step 'slow' (map it to a step of "
            "version 3)",
        )
        assert engine.migrate(plan) == []
        assert stored(db_url, IID) == before
        flag.touch()
        wait_until("the instance to complete", lambda: engine.get(IID).is_terminal, 60)
        inst = engine.get(IID)
        assert inst.status == "completed" and inst.workflow_version == "1"
        assert inst.output == {"by": "old"}
        assert [line.split("/")[1] for line in read_lines(log)] == ["old"]
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
    finally:
        if worker is not None:
            worker.cleanup()
        engine.close()
        gc.collect()
