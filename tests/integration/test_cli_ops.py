"""The operating commands, run as a user would: real subprocesses on a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-7", "items": ["a"], "amount": 10, "email": "ada@example.com"}


def cli(*args: str, db: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEMACHINE_DB": db}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check is not None:
        assert proc.returncode == check, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def test_run_prints_progress_and_result(db: str) -> None:
    proc = cli("run", "definitions/order-processing.yaml", "--input", json.dumps(ORDER),
               "--actions", "examples.actions:ShopActions", db=db)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    assert result["output"] == {"sent_to": "ada@example.com"}
    assert "✓ charge" in proc.stderr


def test_run_exits_1_when_the_workflow_fails(db: str) -> None:
    proc = cli("run", "definitions/order-processing.yaml", "--input", json.dumps({**ORDER, "order_id": ""}),
               "--actions", "examples.actions:ShopActions", db=db, check=1)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "failed"
    assert "order_id" in result["error"]["message"]


def test_start_status_list_history_and_control(db: str) -> None:
    iid = cli(
        "start", "onboarding", "--input", '{"email": "x@y.z", "name": "X"}', "--id", "on-1", db=db
    ).stdout.strip()
    assert iid == "on-1"
    assert "on-1" in cli("list", db=db).stdout
    assert "pending" in cli("status", "on-1", db=db).stdout
    assert "paused" in cli("pause", "on-1", db=db).stdout
    wrong = cli("pause", "on-1", db=db, check=2)
    assert "cannot pause" in wrong.stderr and wrong.stderr.count("\n") == 1
    assert "cancelled" in cli("cancel", "on-1", db=db).stdout
    types = cli("history", "on-1", db=db).stdout
    assert (
        "workflow.started" in types and "workflow.paused" in types and "workflow.cancelled" in types
    )


def test_unknown_ids_and_bad_json_are_one_line_errors(db: str) -> None:
    missing = cli("status", "nope", db=db, check=2)
    assert "no workflow instance with id 'nope'" in missing.stderr
    bad = cli("start", "onboarding", "--input", "{nope", db=db, check=2)
    assert "not valid JSON" in bad.stderr
    unknown = cli("start", "onbording", db=db, check=2)
    assert "did you mean 'onboarding'" in unknown.stderr


def test_run_by_name_uses_the_definitions_folder(db: str) -> None:
    proc = cli("run", "fraud-check", "--input", '{"payment_id": "p-1", "amount": 5000}',
               "--actions", "examples.actions:ShopActions", db=db)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    missing = cli("run", "fraud-check", db=db, check=2)  # no actions: refused before running
    assert "calculateFraudScore" in missing.stderr
    assert "no workflow instance" not in missing.stderr


def test_status_lists_steps_in_the_order_they_started(db: str, tmp_path: Path) -> None:
    """Pass steps all start within one decision, at one instant: the graph's order breaks the
    tie, not the names."""
    flow = tmp_path / "instant.yaml"
    steps = "".join(f"  - id: {name}\n    type: pass\n" for name in ("zeta", "alpha", "mid"))
    flow.write_text(f"id: instant\nsteps:\n{steps}")
    cli("run", str(flow), "--id", "i-1", db=db)
    table = cli("status", "i-1", db=db).stdout
    rows = [
        line.split()[1]
        for line in table.splitlines()
        if line.split()[1:2] in (["zeta"], ["alpha"], ["mid"])
    ]
    assert rows == ["zeta", "alpha", "mid"], table
