"""Riding out a database that is briefly unreachable (a Postgres restart or failover, a full disk).

A worker must outlive such an outage: its claims, lease checks, heartbeats and commits fail for
a while, then work again. Each place retries with a capped exponential backoff (tenacity's
arithmetic, ``WAIT``: 0.1 s doubling to 5 s); the engine's one ``Outage`` logs one warning as
the first failure is seen and one as a write succeeds again, never a traceback per poll.

What counts as an outage (``transient``): a DBAPI ``OperationalError`` or ``InterfaceError``
(connection refused or cut, server shutting down, disk full, I/O error; for SQLite only busy,
locked, I/O, full and cannot-open), a DBAPI error SQLAlchemy saw invalidate its connection, or
a ``StoreError`` wrapping one. A broken schema, a constraint violation or a lost lease is not:
it goes on as before (a worker stops on it, exit 1).

A commit cut off while Postgres was committing it may have been applied or not
(``committer.CommitUnknown``): written again it could record a step twice, so the worker drops
that run instead and claims the instance again from what the database holds.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import tenacity

from statemachine import errors

T = TypeVar("T")
_log = logging.getLogger("statemachine.worker")
WAIT = tenacity.wait_exponential(multiplier=0.1, min=0.1, max=5.0)  # 0.1, 0.2, 0.4 ... 5 s
SLICE = 0.1  # seconds: a backoff sleeps in slices, so a stop is seen within one


def transient(exc: BaseException) -> bool:
    """The database could not be reached or could not write; worth trying again later.

    A ``StoreError`` is one when what it wraps is (one without a cause, such as "the store is
    closed" or "instance id taken", is not). DBAPI errors are told by their PEP 249 class
    (``OperationalError``, ``InterfaceError``), whichever driver raised them, except that
    SQLite's ``OperationalError`` also covers a broken schema ("no such table"): there only
    busy, locked, I/O, full and cannot-open errors count."""
    if isinstance(exc, errors.StoreError):
        return exc.__cause__ is not None and transient(exc.__cause__)
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc.orig, BaseException) and transient(exc.orig)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        return code & 0xFF in _SQLITE_TRANSIENT
    return any(k.__name__ in ("OperationalError", "InterfaceError") for k in type(exc).__mro__)


# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL
_SQLITE_TRANSIENT = frozenset({5, 6, 7, 10, 13, 14, 15})


def delay(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (1-based), from tenacity."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(WAIT(state))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return text[:300] or type(exc).__name__


class Outage:
    """Whether the engine's database is unreachable now; says so once as it starts and ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # monotonic time of the first failure of this outage
        self.count = 0  # outages seen (ended or not)

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
            self.count += 1
        _log.warning(
            "database unavailable (%s failed: %s); retrying with backoff until it is back",
            what,
            one_line(exc),
        )

    def ok(self, write: bool = True) -> None:
        """A store call succeeded. Only a write ends an outage: on a full disk reads still
        work, and the outage would seem to end and begin again at every poll."""
        if self.since is None or not write:  # the common case: no lock, no log
            return
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            _log.warning("database available again after %.1fs", time.monotonic() - since)


class Backoff:
    """One call site's failures in a row: how long to wait before its next try."""

    def __init__(self, outage: Outage, what: str, *, writes: bool = True) -> None:
        self.outage = outage
        self.what = what
        self.writes = writes  # its success ends an outage (``Outage.ok``)
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        self.outage.failed(self.what, exc)
        return delay(self.failures)

    def ok(self) -> None:
        self.failures = 0
        self.outage.ok(self.writes)


def retry(
    fn: Callable[[], T],
    outage: Outage,
    what: str,
    *,
    within: float,
    stop: threading.Event | None = None,
) -> T:
    """``fn()``, tried again after transient failures for up to ``within`` seconds (or until
    ``stop`` is set); the last failure is raised. For threads that may block (not the loop)."""
    backoff = Backoff(outage, what)
    deadline = time.monotonic() + within
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not transient(exc):
                raise
            wait = backoff.failed(exc)
            if time.monotonic() + wait > deadline or (stop is not None and stop.is_set()):
                raise
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            continue
        backoff.ok()
        return result
