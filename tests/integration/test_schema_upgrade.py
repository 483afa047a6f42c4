"""A database made by an earlier release is brought to the newest schema when an engine opens it."""

from __future__ import annotations

import gc

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from statemachine import Engine, workflow
from statemachine.store import database

pytestmark = pytest.mark.empty_database  # each test builds an older schema itself


def _make_at(url: str, revision: str) -> None:
    engine = database.connect(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(database._MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def test_a_database_at_the_first_revision_is_upgraded(db_url: str) -> None:
    _make_at(db_url, "0001")
    with Engine(db_url) as engine:
        engine.register(workflow("w").task("a", lambda x: x).build(), max_concurrent=2)
        assert engine.registry.max_concurrent("w") == 2
        with engine.repo.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            columns = {c["name"]: c for c in sa.inspect(conn).get_columns("sm_event")}
        assert version == "0010"
        if engine.store.dialect == "postgresql":  # SQLite does not enforce a VARCHAR's length
            assert columns["name"]["type"].length == 256
    gc.collect()


def test_history_written_before_the_feed_cursor_is_numbered_in_order(db_url: str) -> None:
    """Migration 0006 on a database with history: the rows there get feed positions in the
    order they were written, and rows written after the upgrade come after them."""
    wf = workflow("w").pass_("a").pass_("b").build()
    with Engine(db_url) as engine:
        engine.register(wf)
        before = [engine.execute("w", {"n": n}).id for n in range(2)]
    cfg = Config()
    cfg.set_main_option("script_location", str(database._MIGRATIONS))
    sa_engine = database.connect(db_url)
    with sa_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")  # back to a database without the cursor
    sa_engine.dispose()
    with Engine(db_url) as engine:
        engine.register(wf)
        after = engine.execute("w", {"n": 2}).id
        feed = engine.store.history_since(None, 0, 1000)
        cursors = [row.cursor for row in feed]
        assert cursors == sorted(set(cursors))
        order = [(row.instance_id, row.entry.seq) for row in feed]
        want = [(i, h.seq) for i in [*before, after] for h in engine.history(i)]
        assert order == want  # instance by instance, as they ran one after the other
        last = engine.store.history_end(None)
        assert last == cursors[-1]
        assert engine.store.history_since(None, last, 10) == []
        assert [r.entry.seq for r in engine.store.history_since(after, 2, 100)] == [
            h.seq for h in engine.history(after) if h.seq > 2
        ]
    gc.collect()
