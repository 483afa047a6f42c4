"""Concurrency slots taken while claiming: a pending instance under its workflow's
``max_concurrent`` or its concurrency key's limit is marked ``running`` in the claim's own
transaction, or left pending (and unclaimed) when its slots are taken.

Race-free across processes: SQLite has one writer; on Postgres every (workflow) and
(workflow, key) involved is locked with an advisory transaction lock first, in one global order
(workflow locks sorted, then key locks sorted, as ``Workflows.reserve_slot`` takes them), so
two claimers never deadlock and never both count the last slot free. Never a global lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from statemachine.store.suspects import Takeover
from statemachine.store.tables import INSTANCE, WORKFLOW
from statemachine.vocabulary import STARTED

LOCK_WORKFLOW = sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))")
# the two-key form: a lock space of its own, apart from the workflow's
LOCK_KEY = sa.text("SELECT pg_advisory_xact_lock(hashtext(:name), hashtext(:key))")
# many keys in one round trip, in the arrays' order (unnest keeps it): sorted by the caller
LOCK_KEYS = sa.text(
    "SELECT count(pg_advisory_xact_lock(hashtext(n), hashtext(k))) "
    "FROM unnest(CAST(:names AS text[]), CAST(:keys AS text[])) AS t(n, k)"
)


def take(conn: sa.Connection, dialect: str, found: list[Takeover]) -> list[Takeover]:
    """``found`` without the pending instances that have no free slot; the others that need
    one are marked running (in the database and in their record: ``drive`` starts them)."""
    pending = [t for t in found if t.rec.status == "pending"]
    if not pending:
        return found
    names = sorted({t.rec.workflow_name for t in pending})
    query = sa.select(WORKFLOW.c.name, WORKFLOW.c.max_concurrent, WORKFLOW.c.key_limit)
    limits = {r[0]: (r[1], r[2]) for r in conn.execute(query.where(WORKFLOW.c.name.in_(names)))}
    caps = {n: c for n, (c, _) in limits.items() if c is not None}
    per_key = {n: k for n, (_, k) in limits.items() if k is not None}
    keyed = sorted(
        {
            (t.rec.workflow_name, t.rec.concurrency_key)
            for t in pending
            if t.rec.concurrency_key is not None and t.rec.workflow_name in per_key
        }
    )
    if not caps and not keyed:
        return found
    if dialect == "postgresql":
        for name in sorted(caps):
            conn.execute(LOCK_WORKFLOW, {"name": name})
        if keyed:
            names, keys = [n for n, _ in keyed], [k for _, k in keyed]
            conn.execute(LOCK_KEYS, {"names": names, "keys": keys})
    held = _held(conn, sorted(caps), keyed)
    dropped: set[str] = set()
    marked: list[str] = []
    for t in pending:  # in claim order: priority, then due time
        wf, key = t.rec.workflow_name, t.rec.concurrency_key
        groups: list[Any] = []
        if wf in caps:
            groups.append((wf, caps[wf]))
        if (wf, key) in keyed:
            groups.append(((wf, key), per_key[wf]))
        if not groups:
            continue
        if any(held.get(group, 0) >= limit for group, limit in groups):
            dropped.add(t.rec.id)
            continue
        for group, _ in groups:
            held[group] = held.get(group, 0) + 1
        marked.append(t.rec.id)
        t.rec.status = "running"
    if marked:
        conn.execute(sa.update(INSTANCE).where(INSTANCE.c.id.in_(marked)).values(status="running"))
    return [t for t in found if t.rec.id not in dropped]


def holding_slot(status: Any) -> Any:
    """``status`` is one that holds a slot, with the statuses written into the SQL (not bound
    parameters), so that the partial index ``ix_sm_instance_slots`` serves the count in every
    plan, a prepared statement's generic plan included; a count by ``(workflow, key)`` on
    another index reads every started instance of the workflow."""
    statuses: sa.BindParameter[list[str]] = sa.bindparam(
        "slot_statuses", sorted(STARTED), expanding=True, literal_execute=True, unique=True
    )
    return status.in_(statuses)


def _held(conn: sa.Connection, capped: list[str], keyed: list[tuple[str, str]]) -> Any:
    """Started instances by workflow (of ``capped``) and by (workflow, key) (of ``keyed``)."""
    started = holding_slot(INSTANCE.c.status)
    out: dict[Any, int] = {}
    if capped:
        query = (
            sa.select(INSTANCE.c.workflow_name, sa.func.count())
            .where(started, INSTANCE.c.workflow_name.in_(capped))
            .group_by(INSTANCE.c.workflow_name)
        )
        out.update({name: int(n) for name, n in conn.execute(query)})
    if keyed:
        keys = sorted({key for _, key in keyed})
        names = sorted({name for name, _ in keyed})
        query = (
            sa.select(INSTANCE.c.workflow_name, INSTANCE.c.concurrency_key, sa.func.count())
            .where(
                started,
                INSTANCE.c.concurrency_key.in_(keys),
                INSTANCE.c.workflow_name.in_(names),
            )
            .group_by(INSTANCE.c.workflow_name, INSTANCE.c.concurrency_key)
        )
        out.update({(name, key): int(n) for name, key, n in conn.execute(query)})
    return out
