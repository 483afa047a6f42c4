"""Workflow definitions by hash and per-workflow settings shared by every engine (limits, slots)."""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from statemachine.store import slots
from statemachine.store.base import Base
from statemachine.store.tables import DEFINITION, INSTANCE, WORKFLOW


class Workflows(Base):
    def __init__(self, url: str | None, *, synchronous: str, busy_timeout: float) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout=busy_timeout)
        # built once: building a statement per call costs more than running it
        self._workflow_upsert = self._setting_upsert("max_concurrent")
        self._key_limit_upsert = self._setting_upsert("key_limit")

    def _setting_upsert(self, column: str) -> Any:
        """Insert a workflow's row or set one setting of it, leaving its other settings."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        ins = insert(WORKFLOW)
        kept = {column: ins.excluded[column], "updated_at": ins.excluded.updated_at}
        return ins.on_conflict_do_update(index_elements=["name"], set_=kept)

    def save_definition(
        self, hash_: str, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        with self.tx() as conn:
            found = conn.execute(
                sa.select(DEFINITION.c.hash).where(DEFINITION.c.hash == hash_)
            ).first()
            if found is None:
                row = {
                    "hash": hash_,
                    "name": name,
                    "version": version,
                    "body": json.dumps(body, default=str),
                    "created_at": now,
                }
                self._insert_ignore(conn, DEFINITION, row, ["hash"])

    def retire(self, name: str, version: str | None, now: datetime) -> int:
        """Mark the stored versions of ``name`` (all, or ``version``) unregistered; how many."""
        cond = [DEFINITION.c.name == name, DEFINITION.c.retired_at.is_(None)]
        if version is not None:
            cond.append(DEFINITION.c.version == version)
        with self.tx() as conn:
            return int(
                conn.execute(sa.update(DEFINITION).where(*cond).values(retired_at=now)).rowcount
            )

    def revive(self, hash_: str) -> None:
        """A version registered again in code may be started again."""
        with self.tx() as conn:
            conn.execute(
                sa.update(DEFINITION)
                .where(DEFINITION.c.hash == hash_, DEFINITION.c.retired_at.is_not(None))
                .values(retired_at=None)
            )

    def retired(self) -> set[str]:
        """Hashes of the unregistered versions."""
        with self.read() as conn:
            return set(
                conn.execute(
                    sa.select(DEFINITION.c.hash).where(DEFINITION.c.retired_at.is_not(None))
                ).scalars()
            )

    def stored_versions(self, name: str) -> builtins.list[str]:
        with self.read() as conn:
            return builtins.list(
                conn.execute(
                    sa.select(DEFINITION.c.version).where(DEFINITION.c.name == name)
                ).scalars()
            )

    def load_definition(self, hash_: str) -> dict[str, Any] | None:
        with self.read() as conn:
            body = conn.execute(
                sa.select(DEFINITION.c.body).where(DEFINITION.c.hash == hash_)
            ).scalar()
        return None if body is None else dict(json.loads(body))

    def set_max_concurrent(self, workflow: str, limit: int, now: datetime) -> None:
        """Store the workflow's limit for every engine on this database; the last write wins."""
        with self.tx() as conn:
            conn.execute(
                self._workflow_upsert,
                {"name": workflow, "max_concurrent": limit, "updated_at": now},
            )

    def set_key_limit(self, workflow: str, limit: int | None, now: datetime) -> None:
        """Store the definition's ``concurrency`` limit (per key value) for every engine; the
        last registered definition wins, one without a limit clears it."""
        with self.tx() as conn:
            if limit is not None:
                params = {"name": workflow, "key_limit": limit, "updated_at": now}
                conn.execute(self._key_limit_upsert, params)
            else:
                conn.execute(
                    sa.update(WORKFLOW)
                    .where(WORKFLOW.c.name == workflow, WORKFLOW.c.key_limit.is_not(None))
                    .values(key_limit=None, updated_at=now)
                )

    def max_concurrent(self) -> dict[str, int]:
        """Every stored limit, by workflow name."""
        query = sa.select(WORKFLOW.c.name, WORKFLOW.c.max_concurrent).where(
            WORKFLOW.c.max_concurrent.is_not(None)
        )
        with self.read() as conn:
            return {name: int(limit) for name, limit in conn.execute(query).all()}

    def reserve_slot(self, instance_id: str, epoch: int, workflow: str) -> bool:
        """Mark a pending instance running if its workflow has fewer active instances than its
        stored ``max_concurrent``, and its concurrency key fewer than the stored key limit
        (both read here, so a limit another engine changed counts at once).

        Count and mark happen in one transaction, serialised per workflow (``max_concurrent``)
        and per (workflow, key) (SQLite: BEGIN IMMEDIATE; Postgres: advisory transaction locks,
        always taken in that order), so two workers never both take the last slot. A slot is
        held while its instance is started: a dead worker's instance keeps it, and whoever
        takes its lease over runs on in it.
        """
        with self.tx() as conn:
            key = conn.execute(
                sa.select(INSTANCE.c.concurrency_key).where(INSTANCE.c.id == instance_id)
            ).scalar()
            limits = conn.execute(
                sa.select(WORKFLOW.c.max_concurrent, WORKFLOW.c.key_limit).where(
                    WORKFLOW.c.name == workflow
                )
            ).first()
            cap, per_key = (None, None) if limits is None else tuple(limits)
            if key is None:
                per_key = None
            if self.dialect == "postgresql":
                if cap is not None:
                    conn.execute(slots.LOCK_WORKFLOW, {"name": workflow})
                if per_key is not None:
                    conn.execute(slots.LOCK_KEY, {"name": workflow, "key": key})
            if cap is not None and _active(conn, workflow) >= cap:
                return False
            if per_key is not None and _active(conn, workflow, key) >= per_key:
                return False
            res = conn.execute(
                sa.update(INSTANCE)
                .where(
                    INSTANCE.c.id == instance_id,
                    INSTANCE.c.lease_epoch == epoch,
                    INSTANCE.c.status == "pending",
                )
                .values(status="running")
            )
            return bool(res.rowcount)


def _active(conn: sa.Connection, workflow: str, key: str | None = None) -> int:
    """Instances of ``workflow`` (with this concurrency ``key``) holding a slot: started ones."""
    query = (
        sa.select(sa.func.count())
        .select_from(INSTANCE)
        .where(INSTANCE.c.workflow_name == workflow, slots.holding_slot(INSTANCE.c.status))
    )
    if key is not None:
        query = query.where(INSTANCE.c.concurrency_key == key)
    return int(conn.execute(query).scalar() or 0)
