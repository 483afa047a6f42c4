"""A database made by an earlier release is brought to the newest schema when an engine opens it."""

from __future__ import annotations

import gc

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from statemachine import Engine, workflow
from statemachine.store import database


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
        assert version == "0005"
        if engine.repo.dialect == "postgresql":  # SQLite does not enforce a VARCHAR's length
            assert columns["name"]["type"].length == 256
    gc.collect()
