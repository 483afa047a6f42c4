"""Opening a database: SQLite pragmas and BEGIN IMMEDIATE, Postgres pooling, schema upgrade."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

from statemachine import errors

_MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "statemachine_read_only"  # execution option of connections that never write


def reader(engine: SAEngine) -> SAEngine:
    """The same engine (and pool) for reads: on SQLite its transactions are deferred, so a
    read never waits for another connection's write lock."""
    return engine.execution_options(**{READ_ONLY: True})


REFUSALS = ("DataError", "IntegrityError")  # DB-API classes: the database refused the data
MESSAGE_LENGTH = 1000  # characters of a driver's message kept in a StoreError's
LOCKED_HINT = (
    "the database is locked: another connection has held its write lock for longer than the "
    "busy timeout (EngineSettings.busy_timeout); try again once it commits, and look for a "
    "process (a worker, a sqlite3 shell) that keeps a transaction open on this file"
)


def store_error(exc: BaseException) -> errors.StoreError:
    """The family's error for a driver's, classified so callers know whether to try again.

    Refusals of the data itself are ``StoreRefused``, never worth a retry: SQLSTATE class 22
    (data exception: NUL in text, a value too long) or 23 (integrity), the DB-API's
    ``DataError``/``IntegrityError``, and values the driver cannot encode or bind (a lone
    surrogate, a type it has no adapter for). The rest (a locked SQLite file, a lost
    connection) is a plain ``StoreError``, which may pass. The driver's error is ``__cause__``.
    """
    if isinstance(exc, errors.StoreError):
        return exc
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the DB-API's error
    said = str(orig)
    if len(said) > MESSAGE_LENGTH:  # Postgres' DETAIL may quote a whole row
        said = said[:MESSAGE_LENGTH] + "..."
    failed: errors.StoreError
    if _refusal(exc) or _refusal(orig):
        failed = errors.StoreRefused(
            f"the database refused the data: {said}; the same write would be refused again, "
            "so it is not retried: look at the value it names, or at the database's "
            "constraints and triggers"
        )
    else:
        failed = errors.StoreError(
            f"{LOCKED_HINT} ({said})" if _locked(orig) else f"database error: {said}"
        )
    failed.__cause__ = exc
    return failed


def _refusal(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError | UnicodeError):
        return True
    if isinstance(exc, TypeError | ValueError) and not isinstance(exc, sa.exc.SQLAlchemyError):
        return True  # raised while encoding or binding a value: the data, not the database
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23"):
        return True
    return any(cls.__name__ in REFUSALS for cls in type(exc).__mro__)


def _locked(exc: BaseException) -> bool:
    """SQLite's busy timeout ran out ("database is locked", "database table is locked")."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def normalise_url(url: str | None) -> str:
    """Accept SQLAlchemy URLs plus two shorthands: a bare file path and ``postgresql://``."""
    if not url:
        return "sqlite:///statemachine.db"
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def in_memory(url: sa.URL) -> bool:
    """An SQLite database that lives in one connection's memory: ``sqlite://``,
    ``sqlite:///:memory:``, or a URI filename with ``mode=memory``."""
    if url.get_backend_name() != "sqlite":
        return False
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def connect(
    url: str | None, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000
) -> SAEngine:
    url = normalise_url(url)
    try:
        if url.startswith("sqlite"):
            # an in-memory database is one connection, handed to one thread at a time: the
            # event loop, the committer and callers' threads take turns (a pool of one, whose
            # checkout waits as a locked file's writer would); SQLAlchemy's default for
            # memory, one connection per thread, would give each thread an empty database
            memory = in_memory(sa.make_url(url))
            pool: dict[str, Any] = {}
            if memory:
                pool = {"poolclass": sa.pool.QueuePool, "pool_size": 1, "max_overflow": 0}
                pool["pool_timeout"] = busy_timeout_ms / 1000
            engine = sa.create_engine(
                url,
                connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
                **pool,
            )
            _sqlite_setup(engine, synchronous, busy_timeout_ms)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        hint = (
            " (install the postgres extra: pip install 'durable-statemachine[postgres]')"
            if "postgres" in url
            else ""
        )
        raise errors.StoreError(f"cannot open database {url!r}: {exc}{hint}") from exc
    return engine


def _sqlite_setup(engine: SAEngine, synchronous: str, busy_timeout_ms: int) -> None:
    if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise errors.StoreError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # switching to WAL needs a moment alone with the file; the busy handler does not cover it
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # a reader: a deferred transaction reads WAL's last committed snapshot at once,
            # where BEGIN IMMEDIATE would queue behind another process's write
            conn.exec_driver_sql("BEGIN")
            return
        # a deferred transaction that reads then writes fails at once with "database is locked"
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: SAEngine) -> None:
    """Bring the schema to the newest migration; concurrent callers serialise on a lock."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise errors.StoreError(f"cannot prepare the database schema: {exc}") from exc
