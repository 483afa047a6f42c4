"""`engine.unregister` (workflow.do's deleteDefinition): no new instances, for every engine on
the database, while running instances finish on their version; the CLI does the same."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statemachine import Engine, WorkflowDefinition, WorkflowNotFound, workflow
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]


def _waiting(version: str = "1") -> WorkflowDefinition:
    return workflow("onboard", version=version).wait("settle", duration="1h").build()


def test_unregistered_workflows_start_nothing_and_running_ones_finish(
    engine: Engine, clock: ManualClock
) -> None:
    engine.register(_waiting())
    running = engine.execute("onboard", {}).id
    assert engine.get(running).status == "waiting"
    engine.unregister("onboard")
    with pytest.raises(WorkflowNotFound, match="unregistered"):
        engine.start("onboard", {})
    assert "onboard" not in {d.name for d in engine.definitions()}
    clock.advance("1h")
    engine.run_due()
    assert engine.get(running).status == "completed"
    engine.register(_waiting())  # registering again in code brings it back
    assert engine.execute("onboard", {}).status == "waiting"


def test_one_version_goes_and_the_previous_one_starts_again(engine: Engine) -> None:
    engine.register(_waiting("1"))
    engine.register(_waiting("2"))
    assert engine.execute("onboard", {}).workflow_version == "2"
    engine.unregister("onboard", version="2")
    assert engine.execute("onboard", {}).workflow_version == "1"
    with pytest.raises(WorkflowNotFound, match="no version '7'"):
        engine.unregister("onboard", version="7")
    with pytest.raises(WorkflowNotFound, match="did you mean 'onboard'"):
        engine.unregister("onbaord")


def test_another_engine_on_the_database_notices(db_url: str) -> None:
    first, second = Engine(db_url), Engine(db_url)
    try:
        first.register(_waiting())
        second.register(_waiting())
        second.unregister("onboard")
        deadline = time.monotonic() + 5
        while True:  # the other engine reads unregistrations again within about a second
            try:
                first.start("onboard", {})
            except WorkflowNotFound:
                break
            assert time.monotonic() < deadline, "the first engine still starts it"
            time.sleep(0.2)
    finally:
        first.close()
        second.close()


def test_the_cli_unregisters_and_its_folder_does_not_bring_it_back(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "w.yaml").write_text("id: hello\nsteps:\n  - id: a\n    action: noop\n")
    env = {**os.environ, "STATEMACHINE_DB": f"sqlite:///{tmp_path}/cli.db"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statemachine", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert cli("start", "hello", "--create", "--definitions", str(defs)).returncode == 0
    done = cli("unregister", "hello")
    assert done.returncode == 0 and "unregistered hello" in done.stdout
    again = cli("start", "hello", "--definitions", str(defs))
    assert again.returncode == 2 and "unregistered" in again.stderr
    assert "Traceback" not in again.stderr
    unknown = cli("unregister", "nope")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
