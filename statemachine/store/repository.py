"""The narrow repository: every SQL statement the engine issues, in domain terms.

Writes of a running instance are fenced on ``lease_epoch``: a transition whose epoch is stale
(another worker claimed the instance since) changes nothing and raises ``LeaseLost``.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as SAEngine

from statemachine import errors, records
from statemachine.store import committer, database, fastpath, suspects, tables

IT = tables.InstanceRow.__table__  # type: ignore[attr-defined]
S = tables.StepRow.__table__  # type: ignore[attr-defined]
H = tables.HistoryRow.__table__  # type: ignore[attr-defined]
E = tables.EventRow.__table__  # type: ignore[attr-defined]
D = tables.DefinitionRow.__table__  # type: ignore[attr-defined]
W = tables.WorkflowRow.__table__  # type: ignore[attr-defined]

RUNNABLE = ("pending", "running", "waiting", "compensating")
ACTIVE = ("running", "waiting", "paused", "compensating")  # started and not finished: holds a slot
RUNNER_KEYS = frozenset(
    {
        "status",
        "state",
        "current_step",
        "output",
        "error",
        "wake_at",
        "started_at",
        "completed_at",
        "updated_at",
        "lease_expires_at",
    }
)


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class InstanceRecord:
    """An instance row as the runtime needs it (state and lease included)."""

    id: str
    workflow_name: str
    workflow_version: str
    definition_hash: str
    status: str
    current_step: str | None
    input: Any
    output: Any
    error: Any
    metadata: dict[str, Any]
    state: dict[str, Any]
    parent_id: str | None
    wake_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_epoch: int
    recoveries: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    history_seq: int = 0  # grows with every transition: a control call's compare-and-set
    crashes: int = 0  # deaths of a worker while its handler ran: a suspect from one on
    lease_alone: bool = False  # its lease's holder runs nothing else meanwhile


@dataclass
class StepWrite:
    path: str
    status: str
    input: Any = None
    output: Any = None
    error: Any = None
    attempts: int = 0
    iteration: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass
class HistoryWrite:
    type: str
    step: str | None
    data: dict[str, Any]
    at: datetime


@dataclass
class NewInstance:
    """An instance to insert: its row, its first history, and the record the runtime uses.
    ``execute`` hands it to the run's first transition, so birth and start are one commit."""

    values: dict[str, Any]
    history: list[HistoryWrite]
    record: InstanceRecord


@dataclass
class Transition:
    """Everything one step of progress changes, committed together or not at all."""

    instance_id: str
    epoch: int | None  # None: not fenced (control calls made without a lease)
    values: dict[str, Any] = field(default_factory=dict)  # instance columns to set
    steps: list[StepWrite] = field(default_factory=list)
    history: list[HistoryWrite] = field(default_factory=list)
    consume_events: list[int] = field(default_factory=list)
    notify: list[tuple[str, str, Any]] = field(default_factory=list)  # (instance, event, data)
    expect_status: Sequence[str] | None = None  # only apply while the status is one of these
    expect_seq: int | None = None  # only apply while ``history_seq`` is this (nothing happened)
    abort_if_paused: bool = False  # roll back if a pause landed meanwhile (the runner re-decides)
    stored: frozenset[str] = frozenset()  # columns of ``values`` known to be stored already
    create: NewInstance | None = None  # insert this instance first, in the same commit


InstancePaused = committer.InstancePaused


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: Any
    received_at: datetime


@dataclass(frozen=True)
class FeedEntry:
    """A history entry with its cursor and instance, as the event feed reads it."""

    cursor: int
    instance_id: str
    workflow_name: str
    entry: records.HistoryEntry


class Repository:
    def __init__(
        self, url: str | None, *, synchronous: str = "FULL", busy_timeout: float = 30.0
    ) -> None:
        self.url = database.normalise_url(url)
        self.engine: SAEngine = database.connect(
            self.url, synchronous=synchronous, busy_timeout_ms=int(busy_timeout * 1000)
        )
        self.dialect = self.engine.dialect.name
        self.reads = database.reader(self.engine)  # never writes: no write lock (SQLite)
        database.upgrade(self.engine)
        self._prepare()
        self.fast = fastpath.FastPath(self.dialect)
        self.committer = committer.Committer(self.engine, self.fast, RUNNABLE)

    def _prepare(self) -> None:
        """Statements of the hot path, built once: building them per step costs more than the commit."""
        self._step_upsert = self._upsert_statement(S, ["instance_id", "path"])
        self._history_insert = sa.insert(H)
        self._workflow_upsert = self._upsert_statement(W, ["name"])

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
            return IT.c.lease_expires_at <= sa.func.now()
        return IT.c.lease_expires_at <= now

    def _until(self, now: datetime, until: datetime) -> Any:
        """A lease's new expiry: ``until - now`` from the database's now() on Postgres."""
        if self.dialect == "postgresql":
            return sa.func.now() + sa.literal(until - now, sa.Interval())
        return until

    def close(self) -> None:
        self.committer.close()
        self.engine.dispose()

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

    # -- definitions ---------------------------------------------------------------------
    def save_definition(
        self, hash_: str, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        with self.tx() as conn:
            found = conn.execute(sa.select(D.c.hash).where(D.c.hash == hash_)).first()
            if found is None:
                row = {
                    "hash": hash_,
                    "name": name,
                    "version": version,
                    "body": json.dumps(body, default=str),
                    "created_at": now,
                }
                self._insert_ignore(conn, D, row, ["hash"])

    def retire(self, name: str, version: str | None, now: datetime) -> int:
        """Mark the stored versions of ``name`` (all, or ``version``) unregistered; how many."""
        cond = [D.c.name == name, D.c.retired_at.is_(None)]
        if version is not None:
            cond.append(D.c.version == version)
        with self.tx() as conn:
            return int(conn.execute(sa.update(D).where(*cond).values(retired_at=now)).rowcount)

    def revive(self, hash_: str) -> None:
        """A version registered again in code may be started again."""
        with self.tx() as conn:
            conn.execute(
                sa.update(D)
                .where(D.c.hash == hash_, D.c.retired_at.is_not(None))
                .values(retired_at=None)
            )

    def retired(self) -> set[str]:
        """Hashes of the unregistered versions."""
        with self.read() as conn:
            return set(
                conn.execute(sa.select(D.c.hash).where(D.c.retired_at.is_not(None))).scalars()
            )

    def stored_versions(self, name: str) -> builtins.list[str]:
        with self.read() as conn:
            return builtins.list(
                conn.execute(sa.select(D.c.version).where(D.c.name == name)).scalars()
            )

    def load_definition(self, hash_: str) -> dict[str, Any] | None:
        with self.read() as conn:
            body = conn.execute(sa.select(D.c.body).where(D.c.hash == hash_)).scalar()
        return None if body is None else dict(json.loads(body))

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

    # -- instances -----------------------------------------------------------------------
    def create_instance(self, new: NewInstance) -> bool:
        """Insert a new instance; False (and nothing written) when the id already exists."""
        return self.committer.create(new)

    def get(self, instance_id: str) -> InstanceRecord | None:
        if "\x00" in instance_id:  # no id holds NUL (Postgres would refuse the query itself)
            return None
        with self.read() as conn:
            row = conn.execute(sa.select(IT).where(IT.c.id == instance_id)).mappings().first()
        return None if row is None else _instance(row)

    def steps(self, instance_id: str) -> builtins.list[records.StepResult]:
        with self.read() as conn:
            query = (
                sa.select(S)
                .where(S.c.instance_id == instance_id)
                .order_by(S.c.started_at, S.c.path)
            )
            rows = conn.execute(query).mappings().all()
        return [_step(r) for r in rows]

    def step_rows(self, instance_id: str) -> dict[str, records.StepResult]:
        return {s.step_name: s for s in self.steps(instance_id)}

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
        query = sa.select(IT)
        if metadata:
            query = query.where(*self._metadata_match(metadata))
        if workflow:
            query = query.where(IT.c.workflow_name == workflow)
        if status:
            query = query.where(
                IT.c.status.in_([status] if isinstance(status, str) else list(status))
            )
        if parent_id:
            query = query.where(IT.c.parent_id == parent_id)
        query = query.order_by(IT.c.created_at.desc(), IT.c.id.desc()).limit(limit).offset(offset)
        with self.read() as conn:
            return [_instance(r) for r in conn.execute(query).mappings().all()]

    def ids_starting_with(self, prefix: str, limit: int) -> builtins.list[str]:
        """Instance ids that begin with ``prefix`` (case-sensitive, unlike SQLite's LIKE), in
        order, at most ``limit``: the command line accepts a unique prefix for an id."""
        if not prefix or "\x00" in prefix:
            return []
        query = (
            sa.select(IT.c.id)
            .where(sa.func.substr(IT.c.id, 1, len(prefix)) == prefix)
            .order_by(IT.c.id)
            .limit(limit)
        )
        with self.read() as conn:
            return [r[0] for r in conn.execute(query)]

    def _metadata_match(self, metadata: Mapping[str, Any]) -> builtins.list[sa.ColumnElement[bool]]:
        """Instances whose metadata has each key with that (scalar) value. Postgres: JSON
        containment, ``metadata::jsonb @> :m``; SQLite: one ``json_each`` lookup per key, typed,
        so ``"1"`` does not match ``1`` nor ``true`` match ``1`` there either."""
        column = IT.c.metadata
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
        """Delete finished instances completed before ``before`` with their steps, history, events."""
        with self.tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(IT.c.id)
                    .where(IT.c.status.in_(sorted(records.TERMINAL)), IT.c.completed_at < before)
                    .limit(limit)
                ).all()
            ]
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                for table in (S, H, E):
                    conn.execute(sa.delete(table).where(table.c.instance_id.in_(chunk)))
                conn.execute(sa.delete(IT).where(IT.c.id.in_(chunk)))
            return len(ids)

    def checkpoint(self) -> None:
        """SQLite: fold the WAL back into the database file so it does not grow without bound."""
        if self.dialect != "sqlite":
            return
        with self.read() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def set_max_concurrent(self, workflow: str, limit: int, now: datetime) -> None:
        """Store the workflow's limit for every engine on this database; the last write wins."""
        with self.tx() as conn:
            conn.execute(
                self._workflow_upsert,
                {"name": workflow, "max_concurrent": limit, "updated_at": now},
            )

    def max_concurrent(self) -> dict[str, int]:
        """Every stored limit, by workflow name."""
        query = sa.select(W.c.name, W.c.max_concurrent).where(W.c.max_concurrent.is_not(None))
        with self.read() as conn:
            return {name: int(limit) for name, limit in conn.execute(query).all()}

    def reserve_slot(self, instance_id: str, epoch: int, workflow: str) -> bool:
        """Mark a pending instance running if fewer of its workflow are active than its stored
        limit (read here, so a limit another engine changed counts at once).

        Count and mark happen in one transaction, serialised per workflow (SQLite: BEGIN
        IMMEDIATE; Postgres: an advisory lock), so two workers never both take the last slot.
        """
        with self.tx() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": workflow}
                )
            limit = conn.execute(sa.select(W.c.max_concurrent).where(W.c.name == workflow)).scalar()
            if limit is not None:
                active = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(IT)
                    .where(IT.c.workflow_name == workflow, IT.c.status.in_(ACTIVE))
                ).scalar()
                if int(active or 0) >= limit:
                    return False
            res = conn.execute(
                sa.update(IT)
                .where(IT.c.id == instance_id, IT.c.lease_epoch == epoch, IT.c.status == "pending")
                .values(status="running")
            )
            return bool(res.rowcount)

    def history(self, instance_id: str) -> builtins.list[records.HistoryEntry]:
        query = sa.select(H).where(H.c.instance_id == instance_id).order_by(H.c.seq)
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [_history_entry(r) for r in rows]

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
        position = H.c.seq if instance_id is not None else feed
        query = (
            sa.select(position.label("cursor"), H, IT.c.workflow_name)
            .select_from(H.join(IT, IT.c.id == H.c.instance_id))
            .where(position > cursor)
            .order_by(position)
            .limit(limit)
        )
        if instance_id is not None:
            if "\x00" in instance_id:
                return []
            query = query.where(H.c.instance_id == instance_id)
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            FeedEntry(
                cursor=int(r["cursor"]),
                instance_id=r["instance_id"],
                workflow_name=r["workflow_name"],
                entry=_history_entry(r),
            )
            for r in rows
        ]

    def history_end(self, instance_id: str | None) -> int:
        """The cursor of the newest history row (of one instance, or of all): a feed that
        starts now reads from here."""
        position = H.c.seq if instance_id is not None else self._feed_column()
        query = sa.select(sa.func.coalesce(sa.func.max(position), 0)).select_from(H)
        if instance_id is not None:
            query = query.where(H.c.instance_id == instance_id)
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

    # -- leases --------------------------------------------------------------------------
    def claim(
        self, instance_id: str, owner: str, now: datetime, until: datetime, *, alone: bool = False
    ) -> tuple[int, bool] | None:
        """Take the lease if it is free, ours, or expired; returns (epoch, was_recovered).
        ``alone``: the claimant runs nothing else while it holds this lease (see ``suspects.takeover``)."""
        with self.tx() as conn:
            row = conn.execute(
                sa.select(
                    IT.c.lease_owner,
                    IT.c.lease_epoch,
                    IT.c.status,
                    IT.c.state,
                    IT.c.lease_alone,
                    self._expired(now).label("expired"),
                )
                .where(IT.c.id == instance_id)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            free = row.lease_owner is None or row.expired is None or bool(row.expired)
            if not free and row.lease_owner != owner:
                return None
            recovered = (
                row.lease_owner is not None and row.lease_owner != owner and row.status in RUNNABLE
            )
            epoch = row.lease_epoch + 1
            values: dict[str, Any] = {
                "lease_owner": owner,
                "lease_expires_at": self._until(now, until),
                "lease_epoch": epoch,
                "lease_alone": alone,
            }
            if recovered:
                crashed, blamed = suspects.takeover(row.state, bool(row.lease_alone))
                values["crashes"] = IT.c.crashes + crashed
                values["recoveries"] = IT.c.recoveries + blamed
            conn.execute(sa.update(IT).where(IT.c.id == instance_id).values(**values))
            return epoch, recovered

    def claim_due(
        self, owner: str, now: datetime, until: datetime, limit: int, *, idle: bool = False
    ) -> Claims:
        """Claim up to ``limit`` due instances in one transaction: (epoch, recovered, record).

        The batch form of ``claim`` + ``get`` for a worker: one commit for many instances.
        Postgres skips rows other workers are claiming (SKIP LOCKED) instead of waiting.

        A suspect (an instance whose handler was running when a worker died) runs alone, so
        that its next death is its own: an ``idle`` worker (running nothing) claims the first
        suspect due and nothing else (its lease marked ``lease_alone``), a busy one claims
        none, and ``Claims.deferred`` says how many it left (the worker stops claiming until
        it is idle). A dead worker's lease on a suspect it leaves is still taken back, so the
        death is counted once.
        """
        lease_free = sa.or_(IT.c.lease_owner.is_(None), self._expired(now))
        query = (
            sa.select(IT)
            .where(IT.c.status.in_(RUNNABLE), IT.c.wake_at <= now, lease_free)
            .order_by(IT.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        b = sa.bindparam
        values = {
            "lease_epoch": b("p_epoch"),
            "recoveries": IT.c.recoveries + b("p_blamed"),
            "crashes": IT.c.crashes + b("p_crashed"),
        }
        update = sa.update(IT).where(IT.c.id == b("p_id"))
        claim = update.values(
            lease_owner=owner,
            lease_expires_at=self._until(now, until),
            lease_alone=b("p_alone"),
            **values,
        )
        leave = update.values(lease_owner=None, lease_expires_at=None, lease_alone=False, **values)
        claimed = Claims()
        with self.tx() as conn:
            rows = [_instance(row) for row in conn.execute(query).mappings().all()]
            taken, left = suspects.isolate([suspects.Takeover.of(rec, owner) for rec in rows], idle)
            for t in taken:
                claimed.append((t.rec.lease_epoch, t.recovered, t.rec))
                t.rec.lease_owner, t.rec.lease_expires_at = owner, until
            if taken:
                conn.execute(claim, [t.params() | {"p_alone": t.rec.lease_alone} for t in taken])
            # suspects left here: a dead worker's lease is given up, its death counted now
            dead = [t.params() for t in left if t.recovered]
            if dead:
                conn.execute(leave, dead)
            claimed.deferred = len(left)
        return claimed

    def due(self, now: datetime, limit: int) -> builtins.list[str]:
        """Ids that have work now: runnable, woken, and not leased by a live worker."""
        lease_free = sa.or_(IT.c.lease_owner.is_(None), self._expired(now))
        query = (
            sa.select(IT.c.id)
            .where(IT.c.status.in_(RUNNABLE), IT.c.wake_at <= now, lease_free)
            .order_by(IT.c.wake_at)
            .limit(limit)
        )
        with self.read() as conn:
            return [r[0] for r in conn.execute(query).all()]

    def heartbeat(self, instance_id: str, epoch: int, now: datetime, until: datetime) -> bool:
        with self.tx() as conn:
            res = conn.execute(
                sa.update(IT)
                .where(IT.c.id == instance_id, IT.c.lease_epoch == epoch)
                .values(lease_expires_at=self._until(now, until))
            )
            return bool(res.rowcount)

    def taken(self, held: dict[str, int]) -> builtins.list[str]:
        """Of these leases (instance id -> epoch), the ones fenced since: cancelled, or taken over."""
        query = sa.select(IT.c.id, IT.c.lease_epoch).where(IT.c.id.in_(builtins.list(held)))
        with self.read() as conn:
            current = {r[0]: r[1] for r in conn.execute(query).all()}
        return [iid for iid, epoch in held.items() if current.get(iid) != epoch]

    def release(
        self,
        instance_id: str,
        epoch: int,
        *,
        recovery: bool = False,
        cleared: bool = False,
        wake_at: datetime | None = None,
    ) -> None:
        """Give the lease up; with ``recovery`` the run was cut short (a handler raised
        SystemExit, a commit failed...): that counts towards dead-lettering, as a death while it
        ran alone does. ``cleared``: the run went well, so the instance is no longer a suspect.
        ``wake_at``: not due again before then (a backoff)."""
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "lease_alone": False,
        }
        if recovery:
            values["recoveries"] = IT.c.recoveries + 1
            values["crashes"] = IT.c.crashes + 1
        elif cleared:
            values["crashes"] = 0
        if wake_at is not None:
            values["wake_at"] = wake_at
        with self.tx() as conn:
            conn.execute(
                sa.update(IT)
                .where(IT.c.id == instance_id, IT.c.lease_epoch == epoch)
                .values(**values)
            )

    # -- transitions ---------------------------------------------------------------------
    def commit_transition(self, t: Transition) -> str:
        """Apply one transition atomically and return the instance's status after it.

        Fenced on the lease epoch: a stale worker gets ``LeaseLost`` and changes nothing. A pause
        that lands while a step runs is kept (the step's result is still recorded).
        Unfenced control transitions (``epoch=None``) return "" when ``expect_status`` or
        ``expect_seq`` fails.
        """
        if self.runner_shaped(t):
            return self.committer.commit(t)
        if t.create is not None:
            raise ValueError("only a runner's transition carries a new instance")
        with self.tx() as conn:
            row = self._generic_update(conn, t)
            if row is None:
                if t.epoch is not None:
                    raise errors.LeaseLost(
                        f"instance {t.instance_id} is now owned by another worker"
                    )
                return ""
            if t.steps:
                conn.execute(
                    self._step_upsert,
                    [{"instance_id": t.instance_id, **st.__dict__} for st in t.steps],
                )
            self._append_history(conn, t.instance_id, int(row[0]) - len(t.history), t.history)
            for target, name, data in t.notify:
                now = t.history[0].at if t.history else datetime.now(UTC)
                conn.execute(
                    sa.insert(E).values(instance_id=target, name=name, data=data, received_at=now)
                )
                conn.execute(
                    sa.update(IT)
                    .where(IT.c.id == target, IT.c.status.in_(RUNNABLE))
                    .values(wake_at=now)
                )
            if t.consume_events:
                at = t.history[0].at if t.history else datetime.now(UTC)
                conn.execute(
                    sa.update(E).where(E.c.id.in_(t.consume_events)).values(consumed_at=at)
                )
            return str(row[1])

    @staticmethod
    def runner_shaped(t: Transition) -> bool:
        """A leased runner's transition: the committer's plain-SQL path (and group commit) takes it."""
        return t.epoch is not None and t.expect_status is None and t.values.keys() == RUNNER_KEYS

    def _generic_update(self, conn: sa.Connection, t: Transition) -> Any:
        where = [IT.c.id == t.instance_id]
        if t.epoch is not None:
            where.append(IT.c.lease_epoch == t.epoch)
        if t.expect_status is not None:
            where.append(IT.c.status.in_(builtins.list(t.expect_status)))
        if t.expect_seq is not None:
            where.append(IT.c.history_seq == t.expect_seq)
        values = {**t.values, "history_seq": IT.c.history_seq + len(t.history)}
        new_status = values.get("status")
        if t.epoch is not None and new_status is not None and new_status not in records.TERMINAL:
            values["status"] = sa.case(
                (IT.c.status == "paused", "paused"), else_=sa.literal(new_status)
            )
        stmt = sa.update(IT).where(*where).values(**values).returning(IT.c.history_seq, IT.c.status)
        return conn.execute(stmt).first()

    def _append_history(
        self, conn: sa.Connection, instance_id: str, first_seq: int, entries: list[HistoryWrite]
    ) -> None:
        if entries:
            conn.execute(
                self._history_insert,
                [
                    {
                        "instance_id": instance_id,
                        "seq": first_seq + n + 1,
                        "at": e.at,
                        "type": e.type,
                        "step": e.step,
                        "data": e.data,
                    }
                    for n, e in enumerate(entries)
                ],
            )

    # -- events --------------------------------------------------------------------------
    def add_event(self, instance_id: str, name: str, data: Any, now: datetime, wake: bool) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.insert(E).values(instance_id=instance_id, name=name, data=data, received_at=now)
            )
            if wake:
                conn.execute(
                    sa.update(IT)
                    .where(IT.c.id == instance_id, IT.c.status == "waiting")
                    .values(wake_at=now)
                )

    def pending_events(self, instance_id: str) -> builtins.list[Event]:
        query = (
            sa.select(E)
            .where(E.c.instance_id == instance_id, E.c.consumed_at.is_(None))
            .order_by(E.c.id)
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
                sa.update(IT)
                .where(IT.c.id == instance_id)
                .values({"metadata": metadata, "updated_at": now})
            )


class Claims(builtins.list[tuple[int, bool, InstanceRecord]]):
    """A worker's claims: (epoch, recovered, record); ``deferred`` suspects were due but left
    for the worker to take alone once it is idle."""

    deferred: int = 0


def _instance(r: sa.RowMapping) -> InstanceRecord:
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
    )


def _step(r: sa.RowMapping) -> records.StepResult:
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


def _history_entry(row: Any) -> records.HistoryEntry:
    """A history row (``sm_history``'s columns, by name) as the read model."""
    return records.HistoryEntry(
        seq=row["seq"],
        at=utc(row["at"]) or datetime.now(UTC),
        type=row["type"],
        step=row["step"],
        data=row["data"] or {},
    )
