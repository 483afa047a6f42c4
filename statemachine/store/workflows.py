"""Workflow definitions by hash and per-workflow settings shared by every engine (limits, slots)."""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from statemachine.store.base import Base
from statemachine.store.tables import DEFINITION, INSTANCE, WORKFLOW
from statemachine.vocabulary import STARTED


class Workflows(Base):
    def __init__(self, url: str | None, *, synchronous: str, busy_timeout: float) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout=busy_timeout)
        # built once: building a statement per call costs more than running it
        self._workflow_upsert = self._upsert_statement(WORKFLOW, ["name"])

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

    def max_concurrent(self) -> dict[str, int]:
        """Every stored limit, by workflow name."""
        query = sa.select(WORKFLOW.c.name, WORKFLOW.c.max_concurrent).where(
            WORKFLOW.c.max_concurrent.is_not(None)
        )
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
            limit = conn.execute(
                sa.select(WORKFLOW.c.max_concurrent).where(WORKFLOW.c.name == workflow)
            ).scalar()
            if limit is not None:
                active = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(INSTANCE)
                    .where(
                        INSTANCE.c.workflow_name == workflow, INSTANCE.c.status.in_(sorted(STARTED))
                    )
                ).scalar()
                if int(active or 0) >= limit:
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
