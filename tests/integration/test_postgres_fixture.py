"""The db_url fixture gives a working, empty database on every backend."""

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
        assert sa.inspect(engine).get_table_names() == []  # a fresh database

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
