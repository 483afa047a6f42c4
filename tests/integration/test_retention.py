"""Retention: pruning finished instances, and the SQLite WAL checkpoint that goes with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from statemachine import Engine, InputValidationError, InstanceNotFound, workflow
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]


def test_prune_removes_only_old_finished_instances(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock)
    try:
        engine.register(workflow("quick").task("a", lambda x: x).build())
        engine.register(workflow("slow").wait("w", duration="90d").build())
        old = engine.execute("quick", {"n": 1}).id
        waiting = engine.execute("slow", {}).id
        clock.advance("40d")
        recent = engine.execute("quick", {"n": 2}).id
        assert engine.prune(older_than="30d") == 1
        with pytest.raises(InstanceNotFound):
            engine.get(old)
        with pytest.raises(InstanceNotFound):
            engine.history(old)
        assert engine.get(recent).status == "completed"
        assert engine.get(waiting).status == "waiting"  # unfinished work is never pruned
        assert len(engine.history(recent)) > 0
        with pytest.raises(InputValidationError):
            engine.prune(older_than="soon")
    finally:
        engine.close()


def test_checkpoint_truncates_the_wal(sqlite_url: str, tmp_path: Path) -> None:
    engine = Engine(sqlite_url)
    try:
        engine.register(workflow("quick").task("a", lambda x: x).build())
        for i in range(30):
            engine.execute("quick", {"n": i})
        wal = tmp_path / "test.db-wal"
        assert wal.exists() and wal.stat().st_size > 0
        engine.prune(older_than="0s")
        assert wal.stat().st_size == 0
        assert engine.list() == []
    finally:
        engine.close()


def test_prune_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    engine = Engine(db)
    try:
        engine.register(workflow("quick").task("a", lambda x: x).build())
        engine.execute("quick", {})
    finally:
        engine.close()
    env = {**os.environ, "STATEMACHINE_DB": db}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "prune", "--older-than", "0s"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "pruned 1 finished instances" in proc.stdout
