"""What every part of the repository shares: the database, its transactions, and rows as records."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as SAEngine

from statemachine import records
from statemachine.store import database
from statemachine.store.records import InstanceRecord
from statemachine.store.tables import INSTANCE


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base:
    """The database of a repository and how its calls reach it."""

    def __init__(self, url: str | None, *, synchronous: str, busy_timeout: float) -> None:
        self.url = database.normalise_url(url)
        self.engine: SAEngine = database.connect(
            self.url, synchronous=synchronous, busy_timeout_ms=int(busy_timeout * 1000)
        )
        self.dialect = self.engine.dialect.name
        self.reads = database.reader(self.engine)  # never writes: no write lock (SQLite)
        database.upgrade(self.engine)

    def _upsert_statement(self, table: sa.Table, keys: builtins.list[str]) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(table)
            return pg.on_conflict_do_update(
                index_elements=keys,
                set_={c.name: pg.excluded[c.name] for c in table.c if c.name not in keys},
            )
        from sqlalchemy.dialects.sqlite import insert as lite_insert

        lite = lite_insert(table)
        return lite.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: lite.excluded[c.name] for c in table.c if c.name not in keys},
        )

    # -- lease time: the database's clock where it has one --------------------------------
    def _expired(self, now: datetime) -> Any:
        """True where a lease has run out. On Postgres by the database's clock, so a worker
        whose clock runs ahead cannot take over live instances; SQLite has no clock of its
        own (every engine on a file shares the machine's), so the engine's clock stands in."""
        if self.dialect == "postgresql":
            return INSTANCE.c.lease_expires_at <= sa.func.now()
        return INSTANCE.c.lease_expires_at <= now

    def _until(self, now: datetime, until: datetime) -> Any:
        """A lease's new expiry: ``until - now`` from the database's now() on Postgres."""
        if self.dialect == "postgresql":
            return sa.func.now() + sa.literal(until - now, sa.Interval())
        return until

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        """One write transaction; a driver's error leaves as a ``StoreError`` (see ``read``)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, sqlite3.Error, UnicodeError) as exc:
            raise database.store_error(exc) from exc

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reads. Every driver error of the store leaves as a ``StoreError``
        (a locked SQLite file says so and what to do; a refused value is ``StoreRefused``):
        no public call lets a raw SQLAlchemy or DB-API error out."""
        try:
            with self.reads.connect() as conn:  # never writes: no write lock (SQLite)
                yield conn
        except (sa.exc.SQLAlchemyError, sqlite3.Error, UnicodeError) as exc:
            raise database.store_error(exc) from exc

    def _insert_ignore(
        self, conn: sa.Connection, table: sa.Table, row: dict[str, Any], keys: list[str]
    ) -> bool:
        """INSERT unless the key exists; True when a row was inserted (RETURNING: rowcount lies)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(table).values(**row).on_conflict_do_nothing(index_elements=keys)
            return conn.execute(pg.returning(table.c[keys[0]])).first() is not None
        from sqlalchemy.dialects.sqlite import insert as lite_insert

        lite = lite_insert(table).values(**row).on_conflict_do_nothing(index_elements=keys)
        return conn.execute(lite.returning(table.c[keys[0]])).first() is not None


def instance_record(r: sa.RowMapping) -> InstanceRecord:
    return InstanceRecord(
        id=r["id"],
        workflow_name=r["workflow_name"],
        workflow_version=r["workflow_version"],
        definition_hash=r["definition_hash"],
        status=r["status"],
        current_step=r["current_step"],
        input=r["input"],
        output=r["output"],
        error=r["error"],
        metadata=dict(r["metadata"] or {}),
        state=dict(r["state"] or {}),
        parent_id=r["parent_id"],
        wake_at=utc(r["wake_at"]),
        lease_owner=r["lease_owner"],
        lease_expires_at=utc(r["lease_expires_at"]),
        lease_epoch=r["lease_epoch"],
        recoveries=r["recoveries"],
        created_at=utc(r["created_at"]) or datetime.now(UTC),
        started_at=utc(r["started_at"]),
        completed_at=utc(r["completed_at"]),
        history_seq=r["history_seq"],
        crashes=r["crashes"],
        lease_alone=bool(r["lease_alone"]),
        priority=r["priority"],
        concurrency_key=r["concurrency_key"],
    )


def step_result(r: sa.RowMapping) -> records.StepResult:
    # a skipped step's error column holds why it was skipped (``InstanceRunner._step_write``)
    skipped = r["status"] == "skipped"
    return records.StepResult(
        step_name=r["path"],
        status=r["status"],
        input=r["input"],
        output=r["output"],
        error=None if skipped else r["error"],
        reason=r["error"] if skipped else None,
        attempts=r["attempts"],
        iteration=r["iteration"],
        started_at=utc(r["started_at"]),
        completed_at=utc(r["completed_at"]),
        next_attempt_at=utc(r["next_attempt_at"]),
    )


def history_entry(row: Any) -> records.HistoryEntry:
    """A history row (``sm_history``'s columns, by name) as the read model."""
    return records.HistoryEntry(
        seq=row["seq"],
        at=utc(row["at"]) or datetime.now(UTC),
        type=row["type"],
        step=row["step"],
        data=row["data"] or {},
    )
