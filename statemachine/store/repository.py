"""The narrow repository: every SQL statement the engine issues, in domain terms.

Writes of a running instance are fenced on ``lease_epoch``: a transition whose epoch is stale
(another worker claimed the instance since) changes nothing and raises ``LeaseLost``. Every
transition, a runner's or a control call's, is written by the committer (``sql_common``).
The rest lives in parts by concern: ``workflows`` (definitions, limits), ``claims`` (leases),
``history`` (history and its feed), ``base`` (the connection).
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from statemachine import records
from statemachine.store import committer
from statemachine.store.base import Base, instance_record, step_result, utc
from statemachine.store.claims import Claims, Leases
from statemachine.store.history import History
from statemachine.store.limits import Limits
from statemachine.store.records import (
    KEEP,
    Columns,
    Event,
    FeedEntry,
    HistoryWrite,
    InstancePaused,
    InstanceRecord,
    NewInstance,
    StepWrite,
    Transition,
)
from statemachine.store.schedules import Schedules
from statemachine.store.tables import ACTION_CALL, EMIT_KEY, EVENT, HISTORY, INSTANCE, STEP
from statemachine.store.workflows import Workflows
from statemachine.vocabulary import RUNNABLE, TERMINAL, InstanceStatus

__all__ = [
    "KEEP", "RUNNABLE", "Claims", "Columns", "Event", "FeedEntry", "HistoryWrite",
    "InstancePaused", "InstanceRecord", "NewInstance", "Repository", "StepWrite", "Transition",
]  # fmt: skip
T = TypeVar("T")


class Repository(Workflows, Limits, Leases, History, Schedules, Base):
    def __init__(
        self, url: str | None, *, synchronous: str = "FULL", busy_timeout: float = 30.0
    ) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout=busy_timeout)
        self.committer = committer.Committer(self.engine)

    def close(self) -> None:
        self.committer.close()
        self.engine.dispose()

    # -- instances -----------------------------------------------------------------------
    def create_instance(self, new: NewInstance) -> bool:
        """Insert a new instance; False (and nothing written) when the id already exists."""
        return self.committer.create(new)

    def get(self, instance_id: str) -> InstanceRecord | None:
        if "\x00" in instance_id:  # no id holds NUL (Postgres would refuse the query itself)
            return None
        with self.read() as conn:
            row = (
                conn.execute(sa.select(INSTANCE).where(INSTANCE.c.id == instance_id))
                .mappings()
                .first()
            )
        return None if row is None else instance_record(row)

    def steps(self, instance_id: str) -> builtins.list[records.StepResult]:
        with self.read() as conn:
            query = (
                sa.select(STEP)
                .where(STEP.c.instance_id == instance_id)
                .order_by(STEP.c.started_at, STEP.c.path)
            )
            rows = conn.execute(query).mappings().all()
        return [step_result(r) for r in rows]

    def list_instances(
        self,
        workflow: str | None,
        status: str | Sequence[str] | None,
        limit: int,
        offset: int,
        parent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> builtins.list[InstanceRecord]:
        texts = [workflow or "", parent_id or ""]
        texts += [t for k, v in (metadata or {}).items() for t in (k, v) if isinstance(t, str)]
        if any("\x00" in v for v in texts):
            return []  # nothing is named with a NUL (and Postgres would refuse the query)
        query = sa.select(INSTANCE)
        if metadata:
            query = query.where(*self._metadata_match(metadata))
        if workflow:
            query = query.where(INSTANCE.c.workflow_name == workflow)
        if status:
            query = query.where(
                INSTANCE.c.status.in_([status] if isinstance(status, str) else list(status))
            )
        if parent_id:
            query = query.where(INSTANCE.c.parent_id == parent_id)
        query = (
            query.order_by(INSTANCE.c.created_at.desc(), INSTANCE.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.read() as conn:
            return [instance_record(r) for r in conn.execute(query).mappings().all()]

    def ids_starting_with(self, prefix: str, limit: int) -> builtins.list[str]:
        """Instance ids that begin with ``prefix`` (case-sensitive, unlike SQLite's LIKE), in
        order, at most ``limit``: the command line accepts a unique prefix for an id."""
        if not prefix or "\x00" in prefix:
            return []
        query = (
            sa.select(INSTANCE.c.id)
            .where(sa.func.substr(INSTANCE.c.id, 1, len(prefix)) == prefix)
            .order_by(INSTANCE.c.id)
            .limit(limit)
        )
        with self.read() as conn:
            return [r[0] for r in conn.execute(query)]

    def _metadata_match(self, metadata: Mapping[str, Any]) -> builtins.list[sa.ColumnElement[bool]]:
        """Instances whose metadata has each key with that (scalar) value. Postgres: JSON
        containment, ``metadata::jsonb @> :m``; SQLite: one ``json_each`` lookup per key, typed,
        so ``"1"`` does not match ``1`` nor ``true`` match ``1`` there either."""
        column = INSTANCE.c.metadata
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            wanted = sa.cast(sa.literal(json.dumps(dict(metadata))), JSONB)
            return [sa.cast(column, JSONB).op("@>")(wanted)]
        found: builtins.list[sa.ColumnElement[bool]] = []
        for key, value in metadata.items():
            each = sa.func.json_each(column).table_valued("key", "value", "type").alias()
            match: builtins.list[sa.ColumnElement[bool]] = [each.c.key == key]
            if value is None or isinstance(value, bool):
                match.append(each.c.type == json.dumps(value))  # 'null', 'true', 'false'
            elif isinstance(value, int | float):
                match += [each.c.type.in_(("integer", "real")), each.c.value == value]
            else:
                match += [each.c.type == "text", each.c.value == value]
            found.append(sa.exists(sa.select(1).select_from(each).where(*match)))
        return found

    def prune(self, before: datetime, limit: int = 10_000) -> int:
        """Delete finished instances completed before ``before`` with their steps, history,
        events and calls of limited actions, and the keys of emits older than ``before``."""
        with self.tx() as conn:
            conn.execute(sa.delete(EMIT_KEY).where(EMIT_KEY.c.created_at < before))
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(INSTANCE.c.id)
                    .where(
                        INSTANCE.c.status.in_(sorted(TERMINAL)), INSTANCE.c.completed_at < before
                    )
                    .limit(limit)
                ).all()
            ]
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                for table in (STEP, HISTORY, EVENT, ACTION_CALL):
                    conn.execute(sa.delete(table).where(table.c.instance_id.in_(chunk)))
                conn.execute(sa.delete(INSTANCE).where(INSTANCE.c.id.in_(chunk)))
            return len(ids)

    def checkpoint(self) -> None:
        """SQLite: fold the WAL back into the database file so it does not grow without bound."""
        if self.dialect != "sqlite":
            return
        with self.read() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- transitions ---------------------------------------------------------------------
    def commit_transition(self, t: Transition) -> str:
        """Apply one transition atomically, now, and return the instance's status after it.

        Fenced on the lease epoch: a stale worker gets ``LeaseLost`` and changes nothing. A pause
        that lands while a step runs is kept (the step's result is still recorded).
        Unfenced control transitions (``epoch=None``) return "" when ``expect_status`` or
        ``expect_seq`` fails.
        """
        return self.committer.commit(t)

    def submit(self, t: Transition) -> asyncio.Future[str]:
        """``commit_transition`` in the next group commit, shared with the other runners in
        flight (one fsync for all), off the event loop; resolves once durable."""
        return self.committer.submit(t)

    def queue(self, t: Transition) -> Future[str]:
        """``submit`` from a thread: the committer thread writes it; refused once closed."""
        return self.committer.queue(t)

    def call(self, job: Callable[[], T]) -> Future[T]:
        """Run ``job`` (its own transaction, e.g. ``claim_due``) on the committer thread."""
        return self.committer.call(job)

    # -- events --------------------------------------------------------------------------
    def add_event(self, instance_id: str, name: str, data: Any, now: datetime, wake: bool) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.insert(EVENT).values(
                    instance_id=instance_id, name=name, data=data, received_at=now
                )
            )
            if wake:
                conn.execute(
                    sa.update(INSTANCE)
                    .where(
                        INSTANCE.c.id == instance_id, INSTANCE.c.status == InstanceStatus.WAITING
                    )
                    .values(wake_at=now)
                )

    def pending_events(self, instance_id: str) -> builtins.list[Event]:
        query = (
            sa.select(EVENT)
            .where(EVENT.c.instance_id == instance_id, EVENT.c.consumed_at.is_(None))
            .order_by(EVENT.c.id)
        )
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Event(r["id"], r["name"], r["data"], utc(r["received_at"]) or datetime.now(UTC))
            for r in rows
        ]

    def set_metadata(self, instance_id: str, metadata: dict[str, Any], now: datetime) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(INSTANCE)
                .where(INSTANCE.c.id == instance_id)
                .values({"metadata": metadata, "updated_at": now})
            )
