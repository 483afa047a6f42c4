"""Today's code resumes what the recorded release left mid-flight (``states.json``, see
``scenario.py``), on SQLite and Postgres, and ends every instance as it did then."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from statemachine import Engine
from statemachine.testing import ManualClock
from tests.golden import scenario

GOLDEN = json.loads((Path(__file__).parent / "states.json").read_text())


def _load(url: str) -> None:
    """The recorded rows into the database ``url`` (already at today's schema)."""
    db = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(db)
    with db.begin() as conn:
        for name, rows in GOLDEN["rows"].items():
            table = meta.tables[name]  # a table the release had is still there
            for row in rows:
                values: dict[str, Any] = {}
                for key, value in row.items():
                    column = table.columns[key]  # and so is each column it had
                    if isinstance(column.type, sa.DateTime) and isinstance(value, str):
                        value = datetime.fromisoformat(value)
                    values[key] = value
                conn.execute(table.insert().values(**values))
    db.dispose()


def test_recorded_instances_resume_and_end_as_they_did(db_url: str) -> None:
    Engine(db_url).close()  # today's schema, migrations included
    _load(db_url)
    clock = ManualClock(datetime.fromisoformat(GOLDEN["paused_at"]))
    engine, _ = scenario.engine_for(db_url, clock)
    try:
        scenario.second_half(engine, clock)
        got = json.loads(json.dumps(scenario.endings(engine), default=str))
    finally:
        engine.close()
    for name, expected in GOLDEN["endings"].items():
        assert got[name] == expected, name


def test_the_recording_covers_every_step_type() -> None:
    kinds = {
        step.get("type", "task")
        for row in GOLDEN["rows"]["sm_definition"]
        for step in _steps(json.loads(row["body"])["steps"])
    }
    assert kinds >= {"task", "choice", "parallel", "pass", "poll", "loop", "wait", "map",
                     "subworkflow"}  # fmt: skip
    mid_flight = {r["status"] for r in GOLDEN["rows"]["sm_instance"]}
    assert "waiting" in mid_flight


def _steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        out.append(step)
        for br in step.get("branches", []) + ([step["iterator"]] if "iterator" in step else []):
            out.extend(_steps(br["steps"]))
    return out
