"""History: one instance's, and the feed of every instance's by database-wide position."""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa

from statemachine import records
from statemachine.store.base import Base, history_entry
from statemachine.store.records import FeedEntry
from statemachine.store.tables import HISTORY, INSTANCE


class History(Base):
    def history(self, instance_id: str) -> builtins.list[records.HistoryEntry]:
        query = (
            sa.select(HISTORY).where(HISTORY.c.instance_id == instance_id).order_by(HISTORY.c.seq)
        )
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [history_entry(r) for r in rows]

    # -- the event feed: history by cursor, from any process ------------------------------
    def _feed_column(self) -> Any:
        """The database-wide position of a history row (migration 0006): Postgres' identity
        ``feed_id``; SQLite's ``rowid``, which grows in commit order (one writer at a time)."""
        name = "feed_id" if self.dialect == "postgresql" else "rowid"
        return sa.literal_column(f"sm_history.{name}", sa.BigInteger)

    def history_since(
        self, instance_id: str | None, cursor: int, limit: int = 500
    ) -> builtins.list[FeedEntry]:
        """History written after ``cursor``, oldest first, whichever process wrote it: of one
        instance (the cursor is its ``seq``) or of every instance (the cursor is the row's
        database-wide position). On Postgres a position may show up after a higher one (two
        transactions committing out of order): ``feed_horizon`` and ``feed_settled`` tell a
        reader of every instance when a gap is final."""
        feed = self._feed_column()
        position = HISTORY.c.seq if instance_id is not None else feed
        query = (
            sa.select(position.label("cursor"), HISTORY, INSTANCE.c.workflow_name)
            .select_from(HISTORY.join(INSTANCE, INSTANCE.c.id == HISTORY.c.instance_id))
            .where(position > cursor)
            .order_by(position)
            .limit(limit)
        )
        if instance_id is not None:
            if "\x00" in instance_id:
                return []
            query = query.where(HISTORY.c.instance_id == instance_id)
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            FeedEntry(
                cursor=int(r["cursor"]),
                instance_id=r["instance_id"],
                workflow_name=r["workflow_name"],
                entry=history_entry(r),
            )
            for r in rows
        ]

    def history_end(self, instance_id: str | None) -> int:
        """The cursor of the newest history row (of one instance, or of all): a feed that
        starts now reads from here."""
        position = HISTORY.c.seq if instance_id is not None else self._feed_column()
        query = sa.select(sa.func.coalesce(sa.func.max(position), 0)).select_from(HISTORY)
        if instance_id is not None:
            query = query.where(HISTORY.c.instance_id == instance_id)
        with self.read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def feed_horizon(self) -> int | None:
        """Postgres: the first transaction id not yet started. Taken after a read that saw a
        gap, every transaction that may still fill it has a lower id (each takes its id at its
        first write, before its history position). None on SQLite, where gaps are final."""
        if self.dialect != "postgresql":
            return None
        with self.read() as conn:
            sql = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
            return int(conn.exec_driver_sql(sql).scalar() or 0)

    def feed_settled(self, horizon: int | None) -> bool:
        """Whether every transaction below ``horizon`` has ended: gaps seen then are final."""
        if horizon is None or self.dialect != "postgresql":
            return True
        with self.read() as conn:
            sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            return int(conn.exec_driver_sql(sql).scalar() or 0) >= horizon
