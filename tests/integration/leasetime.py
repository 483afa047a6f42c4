"""Moving lease time in tests: leases run on the database's clock where it has one.

A ``ManualClock`` moves the engine's timers; on SQLite it also moves leases (SQLite has no clock
of its own, so the engine's stands in). On Postgres a lease runs from the database's now(): a
test that lets a lease run out by moving a fake clock moves the leases back instead, as if that
much time had passed for the database too.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from statemachine import Engine


def lapse(engine: Engine, seconds: float) -> None:
    """Every lease on ``engine``'s database, ``seconds`` nearer its end (Postgres; on SQLite
    the ManualClock the test moves does it)."""
    repo = engine.repo
    if repo.dialect != "postgresql":
        return
    table = sa.table("sm_instance", sa.column("lease_expires_at"))
    shift = sa.literal(timedelta(seconds=seconds), sa.Interval())
    with repo.tx() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.lease_expires_at.is_not(None))
            .values(lease_expires_at=table.c.lease_expires_at - shift)
        )
