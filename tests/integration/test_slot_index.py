"""Claiming a pending instance counts the started instances of its workflow and of its
concurrency key; the count reads the partial index ``ix_sm_instance_slots`` (started instances
only), on both databases and in every plan Postgres may make, so a claim with keys costs about
what one without does, however large the backlog or stale the planner's statistics."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from statemachine import Engine, workflow
from statemachine.store import slots
from statemachine.store.claims import CLAIM_ORDER
from statemachine.store.tables import INSTANCE

INDEX = "ix_sm_instance_slots"


def _keyed(engine: Engine, count: int, keys: int) -> None:
    engine.action("trivial")(lambda data: data)
    flow = workflow("keyed").concurrency(count // keys, key="${{ input.key }}")
    engine.register(flow.task("t", "trivial").build())
    for n in range(count):
        engine.start("keyed", {"key": f"k{n % keys}"})


def _plan(conn: sa.Connection, query: Any) -> str:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
    else:
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_the_claim_counts_a_keys_started_instances_on_the_slot_index(db_url: str) -> None:
    with Engine(db_url) as engine:
        _keyed(engine, 400, 40)
        store = engine.repo
        if store.dialect == "postgresql":  # statistics taken while every instance is pending
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE sm_instance")
        now = engine.clock.now()
        for _ in range(4):
            assert len(store.claim_due("w", now, now + timedelta(hours=1), 50)) == 50
        query = (
            sa.select(INSTANCE)
            .where(*store._claimable(engine.clock.now()))
            .order_by(*CLAIM_ORDER)
            .limit(50)
        )
        with store.engine.connect() as conn:
            plan = _plan(conn, query)
        assert INDEX in plan, plan  # the count by (workflow, key)...
        assert "Filter: ((concurrency_key)" not in plan, plan  # ...not a filter on another index


def test_a_prepared_count_of_a_keys_slots_reads_the_slot_index(db_url: str) -> None:
    """A driver may prepare the claim (psycopg does after a few runs) and Postgres may then plan
    it once for any parameters: the statuses are written into the SQL, or that generic plan
    could not tell the partial index applies."""
    with Engine(db_url) as engine:
        _keyed(engine, 200, 20)
        if engine.repo.dialect != "postgresql":
            return  # SQLite plans each statement as it comes (checked above)
        query = (
            sa.select(sa.func.count())
            .select_from(INSTANCE)
            .where(
                INSTANCE.c.workflow_name == sa.bindparam("workflow", "keyed"),
                INSTANCE.c.concurrency_key == sa.bindparam("key", "k1"),
                slots.holding_slot(INSTANCE.c.status),
            )
        )
        with engine.repo.engine.connect() as conn:
            compiled = query.compile(
                dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
            )
            numbered = iter(range(1, 10))
            text = re.sub(r"%\(\w+\)s", lambda _: f"${next(numbered)}", str(compiled))
            conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            conn.exec_driver_sql(f"PREPARE count_slots(text, text) AS {text}")
            rows = conn.exec_driver_sql("EXPLAIN EXECUTE count_slots('keyed', 'k1')").all()
            conn.exec_driver_sql("DEALLOCATE count_slots")
        plan = "\n".join(r[0] for r in rows)
        assert INDEX in plan and "$1" in plan, plan  # a generic plan, on the slot index
