"""``statemachine schedules`` lists the schedules of a database with their next fire times, and
pauses and resumes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from statemachine import Engine, workflow

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, db: str, cwd: Path, check: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEMACHINE_DB": db, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == check, proc.stderr + proc.stdout
    return proc


def test_schedules_lists_pauses_and_resumes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    with Engine(db) as engine:
        engine.register(
            workflow("nightly")
            .schedule("0 2 * * *", timezone="Europe/Paris")
            .pass_("a", end=True)
            .build()
        )
        expected = engine.schedules()[0].next_at
    assert expected is not None
    table = cli("schedules", db=db, cwd=tmp_path).stdout
    assert "NEXT (UTC)" in table
    (line,) = [row for row in table.splitlines() if row.startswith("nightly")]
    assert "0 2 * * *" in line and "Europe/Paris" in line and "active" in line
    assert expected.strftime("%Y-%m-%d %H:%M:%S") in line
    paused = cli("schedules", "--pause", "nightly", "--json", db=db, cwd=tmp_path).stdout
    assert json.loads(paused)["paused"] is True
    resumed = cli("schedules", "--resume", "nightly", "--json", db=db, cwd=tmp_path).stdout
    assert json.loads(resumed)["paused"] is False
    unknown = cli("schedules", "--pause", "nightli", db=db, cwd=tmp_path, check=2)
    assert "did you mean 'nightly'" in unknown.stderr
