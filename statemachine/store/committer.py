"""Runners' transitions, written through one dedicated DBAPI connection; concurrent ones share a commit.

A durable commit costs one fsync whatever it holds, so with many instances in flight the
committer thread takes every transition queued while the previous commit ran and writes them
all in one transaction (group commit). Each is still fenced on its own lease epoch: a stale one
changes nothing and fails alone, and no caller hears "done" before the commit that holds it.
A runner alone in its process commits inline (``commit``), skipping the thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.engine import Engine as SAEngine

from statemachine import errors
from statemachine.store import database
from statemachine.store.gate import WriteGate
from statemachine.store.postgres import PostgresWriter
from statemachine.store.records import NewInstance, Transition
from statemachine.store.sql_common import Result, Unmatched, Writer
from statemachine.store.sqlite import SqliteWriter

_log = logging.getLogger("statemachine.committer")
MAX_BATCH = 500  # transitions per group commit: bounds one transaction's size and lock time
T = TypeVar("T")
Waiter = asyncio.Future[str] | Future[str]  # a runner's (on its loop), or a thread's


class CommitUnknown(errors.StoreError):
    """The connection failed while Postgres was committing: the transaction may have been
    applied or not. Writing it again could record it twice, so the runner gives up its run
    and claims the instance again from what the database holds (see ``outage``)."""


class _CommitFailed(Exception):
    """Internal: ``COMMIT`` itself raised on Postgres (the outcome is unknown)."""


class Committer:
    def __init__(self, engine: SAEngine) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.writer: Writer = PostgresWriter() if self.pg else SqliteWriter(self._variables)
        self._raw: Any = None  # the pool's DBAPI connection, held for the engine's life
        # ... unless the database is in memory: its pool's one connection serves every thread
        # in turn, so the committer takes it for one transaction at a time
        self._hold = not database.in_memory(engine.url)
        self.gate = WriteGate(None if self.pg else engine.url)
        self._lock = threading.Lock()  # one transaction at a time on the connection
        self._cv = threading.Condition()
        self._queue: list[tuple[Transition, Waiter]] = []
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # commits made, and transitions in them: the group-commit ratio
        self.committed = 0

    # -- callers -------------------------------------------------------------------------
    def commit(self, t: Transition) -> str:
        """Commit ``t`` now, on the calling thread, as a batch of one (nothing else is in
        flight: no thread hop, no wait for a batch to form); the instance's status after it."""
        with self._lock:
            result = self._write([t])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def create(self, new: NewInstance) -> bool:
        """Insert a new instance row and its first history; False if the id exists already."""
        with self._lock:
            try:
                with self._transaction() as cur:
                    return self.writer.insert(cur, new)
            except Exception as exc:
                raise database.store_error(exc) from exc

    def run(self, job: Callable[[Any, Writer], T]) -> T:
        """``job(cursor, writer)`` in one write transaction of its own, on the calling thread
        (a schedule's tick claimed with the insert of its instance: ``store.schedules``)."""
        with self._lock:
            try:
                with self._transaction() as cur:
                    return job(cur, self.writer)
            except Exception as exc:
                raise database.store_error(exc) from exc

    def submit(self, t: Transition) -> asyncio.Future[str]:
        """Queue ``t`` for the next group commit; the future (of the running loop) resolves once
        it is durable. A commit's futures are settled in one callback on their loop: one
        wake-up for the whole batch, not one each."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._enqueue(t, fut)
        return fut

    def queue(self, t: Transition) -> Future[str]:
        """``submit`` for a thread without an event loop: the result, once ``t`` is durable."""
        fut: Future[str] = Future()
        self._enqueue(t, fut)
        return fut

    def _enqueue(self, t: Transition, waiter: Waiter) -> None:
        with self._cv:
            if self._closed:
                raise errors.StoreError("the store is closed")
            self._queue.append((t, waiter))
            self._start()
            self._cv.notify()

    def call(self, job: Callable[[], T]) -> Future[T]:
        """Run ``job`` (its own transaction, e.g. a batch claim) on the committer thread, between
        group commits: the caller's event loop never waits on the database's write lock."""
        fut: Future[T] = Future()
        with self._cv:
            if self._closed:
                raise errors.StoreError("the store is closed")
            self._jobs.append((job, fut))
            self._start()
            self._cv.notify()
        return fut

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="statemachine-committer", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._raw is not None:
                with contextlib.suppress(Exception):
                    self._raw.close()
                self._raw = None
            self.gate.close()

    # -- the committer thread -----------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._queue and not self._jobs:
                    return
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                jobs, self._jobs = self._jobs, []
            for job, done in jobs:
                try:
                    with self.gate.hold():
                        result = job()
                    done.set_result(result)
                except BaseException as exc:  # the caller hears of it
                    done.set_exception(exc)
            if not batch:
                continue
            with self._lock:
                try:
                    results = self._write([t for t, _ in batch])
                except BaseException as exc:  # never leave a caller waiting forever
                    results = [exc] * len(batch)
            settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str], Result]]] = {}
            for (_, fut), result in zip(batch, results, strict=True):
                if isinstance(fut, asyncio.Future):
                    settled.setdefault(fut.get_loop(), []).append((fut, result))
                else:
                    _resolve(fut, result)
            for loop, outcomes in settled.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)

    # -- one transaction ----------------------------------------------------------------
    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one write transaction on the held connection; rolled back on error."""
        with self.gate.hold():
            # the gate first: a memory database's one connection may be held by a claim job,
            # which runs under the gate and would wait for the connection the other way round
            raw = self._connection()
            try:
                cur = raw.cursor()
                if not self.pg:
                    cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
                yield cur
                try:
                    raw.commit()
                except Exception as exc:
                    if self.pg:  # cut off while the server committed: maybe applied
                        raise _CommitFailed(str(exc)) from exc
                    raise  # SQLite rolls a failed commit back: nothing was applied
            except Exception:
                with contextlib.suppress(Exception):
                    raw.rollback()
                if self.pg and getattr(raw.driver_connection, "closed", False):
                    self._discard()
                raise
            finally:
                if not self._hold and self._raw is not None:
                    self._raw.close()  # back to the pool, for the other threads
                    self._raw = None

    def _write(self, batch: list[Transition], group: bool = True) -> list[Result]:
        """All of ``batch`` in one transaction; if the database refuses it, each one alone.
        Parameters and rows are built before the write lock is taken: other processes'
        committers wait for that lock, not for this one's Python."""
        try:
            prepared = [self.writer.prepare(t) for t in batch]
            with self._transaction() as cur:
                results = self.writer.apply(cur, prepared, group)
        except Unmatched:  # rolled back: again, one at a time, to tell which one failed
            return self._write(batch, group=False)
        except _CommitFailed as exc:  # never written again: it may have been applied
            unknown = CommitUnknown(f"database error while committing, outcome unknown: {exc}")
            unknown.__cause__ = exc.__cause__
            return [unknown] * len(batch)
        except Exception as exc:
            if len(batch) > 1:  # one bad transition must not sink the others
                return [self._write([t])[0] for t in batch]
            return [database.store_error(exc)]  # refused data: StoreRefused, never retried
        self.batches += 1
        self.committed += sum(1 for r in results if not isinstance(r, BaseException))
        return results

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.invalidate()
        self._raw = None

    def _variables(self) -> int:
        """Parameters one statement may bind on the held connection (SQLite)."""
        conn = self._connection().driver_connection
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _settle(outcomes: list[tuple[asyncio.Future[str], Result]]) -> None:
    for fut, result in outcomes:
        if not fut.done():  # else its runner was cancelled meanwhile
            _resolve(fut, result)


def _resolve(fut: Waiter, result: Result) -> None:
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
