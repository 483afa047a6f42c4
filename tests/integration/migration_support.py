"""Helpers of the migration tests: an instance's stored rows, to show a blocked one untouched."""

from __future__ import annotations

from typing import Any

import sqlalchemy

from statemachine import Engine


def stored(db_url: str, instance_id: str) -> dict[str, Any]:
    """Every stored row of the instance (its row, its steps, its history), as the database has
    them, to compare byte for byte before and after a migration that must not touch it."""
    db = sqlalchemy.create_engine(db_url)
    try:
        with db.connect() as conn:
            out: dict[str, Any] = {}
            for table, key in (
                ("sm_instance", "id"),
                ("sm_step", "instance_id"),
                ("sm_history", "instance_id"),
            ):
                rows = conn.execute(
                    sqlalchemy.text(f"SELECT * FROM {table} WHERE {key} = :id"), {"id": instance_id}
                ).all()
                out[table] = sorted(tuple(map(repr, row)) for row in rows)
            return out
    finally:
        db.dispose()


def migrated_entry(engine: Engine, instance_id: str) -> dict[str, Any]:
    entries = [h for h in engine.history(instance_id) if h.type == "workflow.migrated"]
    assert len(entries) == 1, [h.type for h in engine.history(instance_id)]
    return dict(entries[0].data or {})
