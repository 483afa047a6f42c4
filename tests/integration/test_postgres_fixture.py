"""The db_url fixture gives a working database with no data on every backend: a SQLite file not
made yet, or a Postgres database copied from one at the newest schema (empty with the
``empty_database`` marker)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def test_db_url_roundtrip(db_url: str, request: pytest.FixtureRequest) -> None:
    expected_dialect = {"sqlite": "sqlite", "postgres": "postgresql"}[
        request.node.callspec.params["db_url"]
    ]
    engine = sa.create_engine(db_url)
    try:
        assert engine.dialect.name == expected_dialect
        tables = sa.inspect(engine).get_table_names()
        if expected_dialect == "sqlite":
            assert tables == []  # a fresh file
        else:  # the schema, copied from the template, and nothing in it
            assert "sm_instance" in tables
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM sm_instance").scalar() == 0

        metadata = sa.MetaData()
        items = sa.Table(
            "items",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(items.insert().values(id=1, name="hello"))
        with engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.id, items.c.name)).all()
        assert [tuple(r) for r in rows] == [(1, "hello")]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.empty_database
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # a SQLite file is always new
def test_an_empty_database_has_no_schema(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
