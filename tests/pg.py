"""Create and drop throwaway PostgreSQL databases for the tests.

The server comes from ``STATEMACHINE_TEST_PG`` (a SQLAlchemy URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/statemachine_test``); start one
locally with ``source .ci/postgres.sh && start_postgres``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_VAR = "STATEMACHINE_TEST_PG"


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


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a new empty database on the server; return its SQLAlchemy URL."""
    name = name or f"t_{uuid.uuid4().hex}"
    with _admin_connect(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop a database, closing any connection still open to it."""
    with _admin_connect(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """Yield the URL of a fresh database, dropped on exit."""
    db_url = create_database(server_url)
    name = make_url(db_url).database
    assert name is not None
    try:
        yield db_url
    finally:
        drop_database(server_url, name)
