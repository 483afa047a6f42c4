"""Create and drop throwaway PostgreSQL databases for the tests.

The server comes from ``STATEMACHINE_TEST_PG`` (a SQLAlchemy URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/statemachine_test``); start one
locally with ``source .ci/postgres.sh && start_postgres``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_VAR = "STATEMACHINE_TEST_PG"
MIGRATIONS = Path(__file__).resolve().parents[1] / "statemachine" / "store" / "migrations"
TEMPLATE_LOCK = 727_275  # an advisory lock id: one process makes the template, the others wait


def _conninfo(url: URL, database: str) -> dict[str, Any]:
    """psycopg connection keywords for ``url``, connected to ``database``."""
    params: dict[str, Any] = {"dbname": database}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = url.password
    return params


def _admin_connect(server_url: str) -> psycopg.Connection[Any]:
    url = make_url(server_url)
    return psycopg.connect(**_conninfo(url, url.database or "postgres"), autocommit=True)


def create_database(server_url: str, name: str | None = None, template: str | None = None) -> str:
    """Create a new database on the server (empty, or a copy of ``template``); return its URL."""
    name = name or f"t_{uuid.uuid4().hex}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin_connect(server_url) as conn:
        conn.execute(create)
    url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop a database, closing any connection still open to it."""
    with _admin_connect(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def schema_template(server_url: str) -> str:
    """The name of a database at the newest schema, made once per server and set of migrations
    (its name carries their hash): a test database copied from it skips running every
    migration, which costs more than the rest of most tests."""
    digest = hashlib.sha1()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        digest.update(path.read_bytes())
    name = f"sm_template_{digest.hexdigest()[:16]}"
    with _admin_connect(server_url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                _make_template(server_url, conn, name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    return name


def _make_template(server_url: str, conn: psycopg.Connection[Any], name: str) -> None:
    from statemachine import Engine  # the schema as the engine makes it, migrations and all

    building = f"{name}_building"
    drop_database(server_url, building)
    url = create_database(server_url, building)
    Engine(url).close()
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(building), sql.Identifier(name)
        )
    )


@contextmanager
def temporary_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Yield the URL of a fresh database (empty, or a copy of ``template``), dropped on exit."""
    db_url = create_database(server_url, template=template)
    name = make_url(db_url).database
    assert name is not None
    try:
        yield db_url
    finally:
        drop_database(server_url, name)
