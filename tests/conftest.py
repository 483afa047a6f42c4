"""Shared fixtures: database URLs for SQLite and (when available) PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_VAR = "STATEMACHINE_TEST_PG"
START_HINT = "source .ci/postgres.sh && start_postgres"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _postgres_server() -> str:
    """The server URL from STATEMACHINE_TEST_PG; fail in CI, skip elsewhere."""
    server = os.environ.get(ENV_VAR, "").strip()
    if server:
        return server
    if _in_ci():
        pytest.fail(
            f"Postgres is required in CI: {ENV_VAR} is not set "
            f"(.ci/run sets it; by hand: {START_HINT})",
            pytrace=False,
        )
    pytest.skip(f"{ENV_VAR} is not set; start a throwaway server with: {START_HINT}")


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/test.db"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite database file in tmp_path."""
    return _sqlite_url(tmp_path)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with no data: a SQLite file not created yet, or a new Postgres
    database, copied from one at the newest schema (a test marked ``empty_database`` gets
    one with no schema at all)."""
    if request.param == "sqlite":
        yield _sqlite_url(tmp_path)
        return
    from tests import pg  # psycopg is only needed when a Postgres test runs

    server = _postgres_server()
    empty = request.node.get_closest_marker("empty_database") is not None
    template = None if empty else pg.schema_template(server)
    with pg.temporary_database(server, template) as url:
        yield url
