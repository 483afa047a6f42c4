"""The schedule rows every engine fires from: kept in step with the registered definitions,
read when due, and a tick claimed in the very transaction that inserts its instance.

A tick is claimed by moving ``next_at`` on from the value the engine read (compare-and-set):
of two engines that read the same ``next_at``, one moves it, the other finds it moved and
starts nothing. The instance is inserted in the same transaction, so a crash leaves either
both (the tick fired) or neither (the tick is still due); an instance id that exists already
(``{workflow}@{tick}``) is no error, the tick is still claimed.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from statemachine.store.base import Base, utc
from statemachine.store.committer import Committer
from statemachine.store.records import NewInstance
from statemachine.store.sql_common import Cursor, Writer
from statemachine.store.tables import DEFINITION, INSTANCE, SCHEDULE
from statemachine.vocabulary import TERMINAL


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    workflow: str
    idx: int
    spec: dict[str, Any]
    timezone: str
    definition_hash: str
    next_at: datetime | None
    last_at: datetime | None
    last_instance: str | None
    paused: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick to claim: the ``next_at`` read (``old``) and the one after it (``new``);
    ``start``: its instance (None: the tick is skipped); ``skip_busy``: start nothing while the
    schedule's previous instance has not finished (``overlap: skip``)."""

    workflow: str
    idx: int
    old: datetime
    new: datetime
    at: datetime | None
    start: NewInstance | None
    skip_busy: bool
    now: datetime


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed tick: whether its instance was inserted now, and the schedule's previous
    instance when it had not finished (for ``overlap: cancel_previous``)."""

    started: bool
    previous_running: str | None


def _record(r: Any) -> ScheduleRecord:
    return ScheduleRecord(
        workflow=r.workflow, idx=int(r.idx), spec=dict(r.spec or {}), timezone=r.timezone,
        definition_hash=r.definition_hash, next_at=utc(r.next_at), last_at=utc(r.last_at),
        last_instance=r.last_instance, paused=bool(r.paused),
    )  # fmt: skip


class Schedules(Base):
    committer: Committer

    def sync_schedules(
        self,
        workflow: str,
        hash_: str,
        specs: Sequence[tuple[dict[str, Any], str, datetime]],
        now: datetime,
    ) -> None:
        """The rows of ``workflow`` become ``specs`` (spec, timezone, first tick), started from
        version ``hash_``. A row whose spec is unchanged keeps its ``next_at`` and pause: a new
        version moves the schedule, it does not restart it."""
        where = SCHEDULE.c.workflow == workflow
        if not specs:  # most workflows: no write transaction unless rows are to go
            with self.read() as conn:
                if conn.execute(sa.select(SCHEDULE.c.idx).where(where).limit(1)).first() is None:
                    return
        with self.tx() as conn:
            rows = {r.idx: r for r in conn.execute(sa.select(SCHEDULE).where(where))}
            conn.execute(sa.delete(SCHEDULE).where(where, SCHEDULE.c.idx >= len(specs)))
            for idx, (spec, timezone, first) in enumerate(specs):
                values = {"definition_hash": hash_, "updated_at": now}
                old = rows.get(idx)
                if old is None:  # another engine registering at once may insert it first
                    row = {"workflow": workflow, "idx": idx, "paused": False, "last_at": None}
                    row.update(values, spec=spec, timezone=timezone, next_at=first)
                    self._insert_ignore(conn, SCHEDULE, row, ["workflow", "idx"])
                    continue
                if old.spec != spec or old.timezone != timezone:
                    values.update(spec=spec, timezone=timezone, next_at=first)
                conn.execute(
                    sa.update(SCHEDULE).where(where, SCHEDULE.c.idx == idx).values(**values)
                )

    def drop_schedules(self, workflow: str, version: str | None = None) -> int:
        """Stop ``workflow``'s schedules (those starting ``version``, or all): unregistered."""
        cond = [SCHEDULE.c.workflow == workflow]
        if version is not None:
            hashes = sa.select(DEFINITION.c.hash).where(
                DEFINITION.c.name == workflow, DEFINITION.c.version == version
            )
            cond.append(SCHEDULE.c.definition_hash.in_(hashes))
        with self.tx() as conn:
            return int(conn.execute(sa.delete(SCHEDULE).where(*cond)).rowcount)

    def schedules(self, workflow: str | None = None) -> builtins.list[ScheduleRecord]:
        query = sa.select(SCHEDULE).order_by(SCHEDULE.c.workflow, SCHEDULE.c.idx)
        if workflow is not None:
            query = query.where(SCHEDULE.c.workflow == workflow)
        with self.read() as conn:
            return [_record(r) for r in conn.execute(query)]

    def due_schedules(self, now: datetime) -> builtins.list[ScheduleRecord]:
        query = (
            sa.select(SCHEDULE)
            .where(SCHEDULE.c.next_at <= now, SCHEDULE.c.paused.is_(False))
            .order_by(SCHEDULE.c.next_at)
        )
        with self.read() as conn:
            return [_record(r) for r in conn.execute(query)]

    def set_schedule(
        self, workflow: str, idx: int, *, paused: bool, next_at: datetime | None, now: datetime
    ) -> None:
        values: dict[str, Any] = {"paused": paused, "updated_at": now}
        if next_at is not None:
            values["next_at"] = next_at
        with self.tx() as conn:
            conn.execute(
                sa.update(SCHEDULE)
                .where(SCHEDULE.c.workflow == workflow, SCHEDULE.c.idx == idx)
                .values(**values)
            )

    def claim_tick(self, tick: Tick) -> Claimed | None:
        """Claim ``tick`` and insert its instance in one transaction; None when another engine
        claimed it first (``next_at`` moved) or the schedule was paused or dropped."""
        lock = " FOR UPDATE OF s" if self.dialect == "postgresql" else ""  # the other one waits
        return self.committer.run(lambda cur, writer: _claim(cur, writer, tick, lock))


def _claim(cur: Cursor, writer: Writer, tick: Tick, lock: str) -> Claimed | None:
    m = writer.mark
    key = f"s.workflow = {m('workflow')} AND s.idx = {m('idx')}"
    cur.execute(
        f"SELECT s.last_instance, i.status FROM {SCHEDULE.name} s "
        f"LEFT JOIN {INSTANCE.name} i ON i.id = s.last_instance "
        f"WHERE {key} AND s.next_at = {m('old')} AND NOT s.paused{lock}",
        {"workflow": tick.workflow, "idx": tick.idx, "old": writer.time(tick.old)},
    )
    row = cur.fetchone()
    if row is None:
        return None
    previous, status = row
    busy = status is not None and status not in TERMINAL
    start = tick.start is not None and not (tick.skip_busy and busy)
    values = {"new": writer.time(tick.new), "now": writer.time(tick.now)}
    sets = f"next_at = {m('new')}, updated_at = {m('now')}"
    if start and tick.start is not None:
        values.update(at=writer.time(tick.at), iid=tick.start.record.id)
        sets += f", last_at = {m('at')}, last_instance = {m('iid')}"
    cur.execute(
        f"UPDATE {SCHEDULE.name} SET {sets} WHERE workflow = {m('workflow')} AND idx = {m('idx')}",
        {**values, "workflow": tick.workflow, "idx": tick.idx},
    )
    # after the claim, in its transaction: an insert that fails takes the claim back with it
    started = writer.insert(cur, tick.start) if start and tick.start is not None else False
    return Claimed(started=started, previous_running=previous if busy else None)
