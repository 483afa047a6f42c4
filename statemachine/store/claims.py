"""Leases: claiming instances (one, or a worker's batch), heartbeats, fencing checks, release.

Lease time runs on the database's clock where it has one (Postgres), see ``Base._expired``.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from statemachine.store import slots, suspects
from statemachine.store.base import Base, instance_record
from statemachine.store.records import InstanceRecord
from statemachine.store.tables import INSTANCE, WORKFLOW
from statemachine.vocabulary import RUNNABLE


class Leases(Base):
    def claim(
        self, instance_id: str, owner: str, now: datetime, until: datetime, *, alone: bool = False
    ) -> tuple[int, bool] | None:
        """Take the lease if it is free, ours, or expired; returns (epoch, was_recovered).
        ``alone``: the claimant runs nothing else while it holds this lease (see ``suspects.takeover``)."""
        with self.tx() as conn:
            row = conn.execute(
                sa.select(
                    INSTANCE.c.lease_owner,
                    INSTANCE.c.lease_epoch,
                    INSTANCE.c.status,
                    INSTANCE.c.state,
                    INSTANCE.c.lease_alone,
                    self._expired(now).label("expired"),
                )
                .where(INSTANCE.c.id == instance_id)
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
                values["crashes"] = INSTANCE.c.crashes + crashed
                values["recoveries"] = INSTANCE.c.recoveries + blamed
            conn.execute(sa.update(INSTANCE).where(INSTANCE.c.id == instance_id).values(**values))
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
        query = (
            sa.select(INSTANCE)
            .where(*self._claimable(now))
            .order_by(*CLAIM_ORDER)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        b = sa.bindparam
        values = {
            "lease_epoch": b("p_epoch"),
            "recoveries": INSTANCE.c.recoveries + b("p_blamed"),
            "crashes": INSTANCE.c.crashes + b("p_crashed"),
        }
        update = sa.update(INSTANCE).where(INSTANCE.c.id == b("p_id"))
        claim = update.values(
            lease_owner=owner,
            lease_expires_at=self._until(now, until),
            lease_alone=b("p_alone"),
            **values,
        )
        leave = update.values(lease_owner=None, lease_expires_at=None, lease_alone=False, **values)
        claimed = Claims()
        with self.tx() as conn:
            rows = [instance_record(row) for row in conn.execute(query).mappings().all()]
            taken, left = suspects.isolate([suspects.Takeover.of(rec, owner) for rec in rows], idle)
            taken = slots.take(conn, self.dialect, taken)
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
        query = (
            sa.select(INSTANCE.c.id)
            .where(*self._claimable(now))
            .order_by(*CLAIM_ORDER)
            .limit(limit)
        )
        with self.read() as conn:
            return [r[0] for r in conn.execute(query).all()]

    def _claimable(self, now: datetime) -> builtins.list[Any]:
        """Runnable, woken, not leased by a live worker, and not a pending instance whose
        slots are all taken (it waits pending; ``Workflows.reserve_slot`` is the real check)."""
        lease_free = sa.or_(INSTANCE.c.lease_owner.is_(None), self._expired(now))
        due = [INSTANCE.c.status.in_(sorted(RUNNABLE)), INSTANCE.c.wake_at <= now, lease_free]
        return [*due, _room()]

    def heartbeat(self, instance_id: str, epoch: int, now: datetime, until: datetime) -> bool:
        with self.tx() as conn:
            res = conn.execute(
                sa.update(INSTANCE)
                .where(INSTANCE.c.id == instance_id, INSTANCE.c.lease_epoch == epoch)
                .values(lease_expires_at=self._until(now, until))
            )
            return bool(res.rowcount)

    def taken(self, held: dict[str, int]) -> builtins.list[str]:
        """Of these leases (instance id -> epoch), the ones fenced since: cancelled, or taken over."""
        query = sa.select(INSTANCE.c.id, INSTANCE.c.lease_epoch).where(
            INSTANCE.c.id.in_(builtins.list(held))
        )
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
            values["recoveries"] = INSTANCE.c.recoveries + 1
            values["crashes"] = INSTANCE.c.crashes + 1
        elif cleared:
            values["crashes"] = 0
        if wake_at is not None:
            values["wake_at"] = wake_at
        with self.tx() as conn:
            conn.execute(
                sa.update(INSTANCE)
                .where(INSTANCE.c.id == instance_id, INSTANCE.c.lease_epoch == epoch)
                .values(**values)
            )


# higher priority first, then the earlier due time: equal priorities are first come, first served
CLAIM_ORDER = (INSTANCE.c.priority.desc(), INSTANCE.c.wake_at)


def _room() -> Any:
    """A pending instance may start: its workflow is under ``max_concurrent`` and its
    concurrency key under the key limit; started instances hold the slots."""
    held = INSTANCE.alias("held")

    def active(*same: Any) -> Any:
        started = slots.holding_slot(held.c.status)
        same_workflow = held.c.workflow_name == INSTANCE.c.workflow_name
        query = sa.select(sa.func.count()).select_from(held).where(same_workflow, started, *same)
        return query.scalar_subquery()

    def setting(column: Any) -> Any:
        return (
            sa.select(column).where(WORKFLOW.c.name == INSTANCE.c.workflow_name).scalar_subquery()
        )

    cap, per_key = setting(WORKFLOW.c.max_concurrent), setting(WORKFLOW.c.key_limit)
    # the workflows with a cap: one hashed subquery per claim, not a lookup per candidate
    capped = sa.select(WORKFLOW.c.name).where(WORKFLOW.c.max_concurrent.is_not(None))
    name, key = INSTANCE.c.workflow_name, INSTANCE.c.concurrency_key
    return sa.or_(
        INSTANCE.c.status != "pending",
        sa.and_(key.is_(None), name.not_in(capped)),  # no limit: nothing to count
        sa.and_(
            sa.or_(name.not_in(capped), active() < cap),
            sa.or_(
                key.is_(None), per_key.is_(None), active(held.c.concurrency_key == key) < per_key
            ),
        ),
    )


class Claims(builtins.list[tuple[int, bool, InstanceRecord]]):
    """A worker's claims: (epoch, recovered, record); ``deferred`` suspects were due but left
    for the worker to take alone once it is idle."""

    deferred: int = 0
