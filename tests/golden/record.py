"""Record ``states.json``: ``python -m tests.golden.record`` (only when the golden scenario changes
on purpose; the point of the file is that today's code must resume what it holds)."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from statemachine.testing import ManualClock
from tests.golden import scenario

HERE = Path(__file__).parent
TABLES = ("sm_definition", "sm_workflow", "sm_instance", "sm_step", "sm_history", "sm_event")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    db = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(db)
    out: dict[str, list[dict[str, Any]]] = {}
    with db.connect() as conn:
        for name in TABLES:
            if name in meta.tables:
                table = meta.tables[name]
                keys = [c.name for c in table.primary_key.columns]
                rows = conn.execute(sa.select(table).order_by(*keys)).mappings().all()
                out[name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
    db.dispose()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/golden.db"
        clock = ManualClock(scenario.START)
        engine, _ = scenario.engine_for(url, clock)
        scenario.first_half(engine, clock)
        engine.close()
        rows = dump(url)
        paused_at = clock.now().isoformat()
        engine, _ = scenario.engine_for(url, clock)
        # a restart: the second half runs with fresh actions, as the replay test does
        scenario.second_half(engine, clock)
        endings = scenario.endings(engine)
        engine.close()
    (HERE / "states.json").write_text(
        json.dumps({"paused_at": paused_at, "rows": rows, "endings": endings}, indent=1,
                   sort_keys=True, default=str) + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
