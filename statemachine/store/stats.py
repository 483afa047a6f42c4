"""Counts over the whole database, for gauges read at scrape time (``observability.metrics``):
every process that shares the database sees the same numbers."""

from __future__ import annotations

import sqlalchemy as sa

from statemachine.store import repository as repo
from statemachine.store.tables import INSTANCE


def instances_by_status(store: repo.Repository) -> dict[str, int]:
    """How many instances have each status now; a status none has is absent."""
    query = sa.select(INSTANCE.c.status, sa.func.count()).group_by(INSTANCE.c.status)
    with store.read() as conn:
        return {str(status): int(count) for status, count in conn.execute(query)}
