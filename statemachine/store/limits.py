"""Rows shared by every engine on the database for flow control: the keys of idempotent
``emit`` calls, and the limits per action with the calls that count against them."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from statemachine.store.base import Base, utc
from statemachine.store.tables import ACTION_CALL, ACTION_LIMIT, EMIT_KEY, INSTANCE


@dataclass(frozen=True)
class ActionLimit:
    """At most ``rate`` calls started in any ``per`` seconds, ``concurrency`` running at once."""

    rate: int | None
    per: float | None
    concurrency: int | None


class Limits(Base):
    def __init__(self, url: str | None, *, synchronous: str, busy_timeout: float) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout=busy_timeout)
        self._limit_upsert = self._upsert_statement(ACTION_LIMIT, ["action"])

    # -- idempotent emits ------------------------------------------------------------------
    def emitted(self, event: str, key: str) -> builtins.list[str] | None:
        """The ids an ``emit`` of ``event`` with ``key`` started, if one was recorded."""
        query = sa.select(EMIT_KEY.c.ids).where(EMIT_KEY.c.event == event, EMIT_KEY.c.key == key)
        with self.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else builtins.list(row[0] or [])

    def record_emit(
        self, event: str, key: str, ids: builtins.list[str], now: datetime
    ) -> builtins.list[str]:
        """Keep ``ids`` for the key unless another emit recorded it first; the ids kept.

        Insert-or-ignore, then read back: two processes racing on one key agree on the ids."""
        row = {"event": event, "key": key, "ids": ids, "created_at": now}
        with self.tx() as conn:
            self._insert_ignore(conn, EMIT_KEY, row, ["event", "key"])
            kept = conn.execute(
                sa.select(EMIT_KEY.c.ids).where(EMIT_KEY.c.event == event, EMIT_KEY.c.key == key)
            ).scalar()
        return builtins.list(kept or [])

    # -- limits per action -----------------------------------------------------------------
    def set_action_limit(self, action: str, limit: ActionLimit | None, now: datetime) -> None:
        """Store (or with None remove) the limit of ``action`` for every engine; last write wins."""
        with self.tx() as conn:
            if limit is None:
                conn.execute(sa.delete(ACTION_LIMIT).where(ACTION_LIMIT.c.action == action))
                return
            values = {
                "action": action,
                "rate": limit.rate,
                "per": limit.per,
                "concurrency": limit.concurrency,
                "updated_at": now,
            }
            conn.execute(self._limit_upsert, values)

    def action_limits(self) -> dict[str, ActionLimit]:
        with self.read() as conn:
            rows = conn.execute(sa.select(ACTION_LIMIT)).mappings().all()
        return {r["action"]: ActionLimit(r["rate"], r["per"], r["concurrency"]) for r in rows}

    def admit_call(
        self,
        action: str,
        instance_id: str,
        path: str,
        epoch: int,
        clock: Callable[[], datetime],
        recheck: float,
        guard: float = 0.0,
    ) -> datetime | None:
        """Record a call of ``action`` if its limit lets it start now (None), else the time it
        may try again: when the oldest call of the full window leaves it, or ``recheck``
        seconds on for a concurrency slot (its end is not known). The rate's window is counted
        ``guard`` seconds longer than it is, so that a handler that starts a little later after
        its admission than the next one does cannot show as a burst.

        One short transaction that locks only this action's row (Postgres ``FOR UPDATE``;
        SQLite's ``BEGIN IMMEDIATE`` writer), so two processes never both take the last token
        or slot. The time is read from ``clock`` once the row is locked: a time read before
        waiting for the lock would be older than calls admitted meanwhile, and miss them."""
        with self.tx() as conn:
            query = sa.select(ACTION_LIMIT).where(ACTION_LIMIT.c.action == action)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            now = clock()
            limit = ActionLimit(row["rate"], row["per"], row["concurrency"])
            calls = ACTION_CALL.c
            window = (limit.per or 0) + min(guard, (limit.per or 0) / 10)
            horizon = now - timedelta(seconds=window)
            conn.execute(  # calls out of every window and not running count no more
                sa.delete(ACTION_CALL).where(
                    calls.action == action, calls.started_at <= horizon, calls.running.is_(False)
                )
            )
            if (
                limit.concurrency is not None
                and self._running(conn, action, now) >= limit.concurrency
            ):
                return now + timedelta(seconds=recheck)
            if limit.rate is not None and limit.per is not None:
                recent = conn.execute(
                    sa.select(calls.started_at)
                    .where(calls.action == action, calls.started_at > horizon)
                    .order_by(calls.started_at.desc())
                    .limit(limit.rate)
                ).all()
                if len(recent) >= limit.rate:
                    oldest = utc(recent[-1][0]) or now
                    return oldest + timedelta(seconds=window)
            conn.execute(
                sa.insert(ACTION_CALL).values(
                    action=action, started_at=now, instance_id=instance_id, path=path,
                    epoch=epoch, running=limit.concurrency is not None,
                )
            )  # fmt: skip
        return None

    def _running(self, conn: sa.Connection, action: str, now: datetime) -> int:
        """Calls of ``action`` holding a slot under a live lease: a slot taken by a worker that
        died is free once its lease expired or another worker took the instance over."""
        calls = ACTION_CALL.c
        live = sa.and_(
            INSTANCE.c.id == calls.instance_id,
            INSTANCE.c.lease_epoch == calls.epoch,
            INSTANCE.c.lease_owner.is_not(None),
            sa.not_(self._expired(now)),
        )
        query = (
            sa.select(sa.func.count())
            .select_from(ACTION_CALL.join(INSTANCE, live))
            .where(calls.action == action, calls.running.is_(True))
        )
        return int(conn.execute(query).scalar() or 0)

    def end_call(self, action: str, instance_id: str, path: str, epoch: int) -> None:
        """The call ended: its concurrency slot is free (its start still counts for the rate)."""
        calls = ACTION_CALL.c
        with self.tx() as conn:
            conn.execute(
                sa.update(ACTION_CALL)
                .where(
                    calls.action == action,
                    calls.instance_id == instance_id,
                    calls.path == path,
                    calls.epoch == epoch,
                    calls.running.is_(True),
                )
                .values(running=False)
            )
