"""Hands a SQLite file's write lock from one process's committer straight to the next.

SQLite's busy handler retries a locked write after 1, 2, 5, 10... ms. A group commit holds the
lock for a fraction of a millisecond, so with two worker processes each mostly waits out sleeps
far longer than the other's commit: measured, two workers drained no faster than one. Writers
that pass through the gate first take an advisory ``flock`` on a side file (``<db>.gate``):
the kernel wakes a waiter the moment the holder lets go. SQLite's own lock still guards the
data; the gate only decides who asks for it next, and a writer that does not use it (a control
call's session) is merely served by the busy handler, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from sqlalchemy.engine import URL

try:
    import fcntl
except ImportError:  # Windows: no flock; writers fall back to SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger("statemachine.store")


class WriteGate:
    """One per engine: a thread lock first (flock does not order threads that share one
    descriptor), then the file lock. A holder keeps it for one transaction only, and the kernel
    drops it if the holder's process dies; a waiter blocks until then, just as SQLite would
    have kept it waiting for its write lock."""

    def __init__(self, url: URL | None) -> None:
        """``url``: a SQLite file's; None (Postgres), an in-memory database or a URI filename
        (``?uri=true``: maybe in memory, and its path is not a plain one) get no gate file."""
        self._threads = threading.Lock()
        self._fd: int | None = None
        database = None
        if (
            url is not None
            and url.database not in (None, "", ":memory:")
            and "uri" not in url.query
        ):
            database = url.database
        if fcntl is not None and database is not None:
            try:
                self._fd = os.open(f"{database}.gate", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only directory: SQLite will say more when it writes
                _log.debug("no write gate for %s: %s", database, exc)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            fd = self._lock()
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock(self) -> int | None:
        fd = self._fd
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        except OSError as exc:  # a file system without flock: SQLite's lock alone, as before
            _log.debug("write gate unavailable: %s", exc)
            self._fd = None
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
