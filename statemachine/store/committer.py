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
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from statemachine import errors, records
from statemachine.store import database, fastpath
from statemachine.store.gate import WriteGate

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from statemachine.store.repository import NewInstance, Transition

_log = logging.getLogger("statemachine.committer")
MAX_BATCH = 500  # transitions per group commit: bounds one transaction's size and lock time
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM (VALUES ...)
Result = str | BaseException
T = TypeVar("T")


class InstancePaused(Exception):
    """Internal: a runner's transition met a pause; nothing was written."""


class CommitUnknown(errors.StoreError):
    """The connection failed while Postgres was committing: the transaction may have been
    applied or not. Writing it again could record it twice, so the runner gives up its run
    and claims the instance again from what the database holds (see ``outage``)."""


class _CommitFailed(Exception):
    """Internal: ``COMMIT`` itself raised on Postgres (the outcome is unknown)."""


class _Unmatched(Exception):
    """Internal: an UPDATE of a grouped batch matched fewer rows than it carried (a lease
    lost, a pause, an id taken): the batch is rolled back and written again, one UPDATE per
    transition, so that only the ones refused fail."""


class Committer:
    def __init__(
        self, engine: SAEngine, fast: fastpath.FastPath, runnable: tuple[str, ...]
    ) -> None:
        self.engine = engine
        self.fast = fast
        self.pg = fast.pg
        self._runnable = runnable
        self._raw: Any = None  # the pool's DBAPI connection, held for the engine's life
        # ... unless the database is in memory: its pool's one connection serves every thread
        # in turn, so the committer takes it for one transaction at a time
        self._hold = not database.in_memory(engine.url)
        self.gate = WriteGate(None if self.pg else engine.url)
        self._lock = threading.Lock()  # one transaction at a time on the connection
        self._cv = threading.Condition()
        self._queue: list[tuple[Transition, asyncio.Future[str]]] = []
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # commits made, and transitions in them: the group-commit ratio
        self.committed = 0

    # -- callers -------------------------------------------------------------------------
    def commit(self, t: Transition) -> str:
        """Commit ``t`` now, on the calling thread; returns the instance's status after it."""
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
                    return self._insert(cur, new)
            except Exception as exc:
                raise database.store_error(exc) from exc

    def _insert(self, cur: Any, new: NewInstance) -> bool:
        values = {**new.values, "history_seq": len(new.history)}
        sql, params = self.fast.insert_instance(values)
        cur.execute(sql, params)
        if cur.fetchone() is None:
            return False
        if new.history:
            history = self.fast.history_values(new.history)
            rows = self.fast.history_rows(values["id"], 0, history)
            cur.executemany(self.fast.insert_history, rows)
        return True

    def submit(self, t: Transition) -> asyncio.Future[str]:
        """Queue ``t`` for the next group commit; the future (of the running loop) resolves once
        it is durable. A commit's futures are settled in one callback on their loop: one
        wake-up for the whole batch, not one each."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        with self._cv:
            if self._closed:
                raise errors.StoreError("the store is closed")
            self._queue.append((t, fut))
            self._start()
            self._cv.notify()
        return fut

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
                settled.setdefault(fut.get_loop(), []).append((fut, result))
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
        Rows and JSON are built before the write lock is taken: other processes' committers
        wait for that lock, not for this one's Python."""
        try:
            prepared = [self._prepare(t) for t in batch]
            with self._transaction() as cur:
                rows = _Rows()
                if group and self.pg and len(prepared) > 1:
                    results = self._apply_pipelined(cur, prepared, rows)
                elif group and self._groupable(prepared):
                    results = self._apply_all(cur, prepared, rows)
                else:
                    results = [self._apply(cur, p, rows) for p in prepared]
                rows.flush(cur, self.fast)
        except _Unmatched:  # rolled back: again, one UPDATE each, to tell which one failed
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

    def _prepare(self, t: Transition) -> _Prepared:
        assert t.epoch is not None
        status = t.values["status"]
        abort = t.abort_if_paused and status != "paused" and status not in records.TERMINAL
        sql, params = self.fast.runner_update(
            t.values,
            t.instance_id,
            t.epoch,
            len(t.history),
            status in records.TERMINAL,
            abort,
            t.stored,
        )
        steps = self.fast.step_rows(t.instance_id, t.steps)
        history = self.fast.history_values(t.history)
        if self.pg:  # one round trip (the rows ride on the UPDATE): each costs one on Postgres
            sql, params = self.fast.pg_transition((sql, params), t.instance_id, steps, history)
        return _Prepared(t, sql, params, steps, history)

    def _apply(self, cur: Any, p: _Prepared, rows: _Rows) -> Result:
        """The fenced UPDATE now; on SQLite the step and history rows go to ``rows``, written
        for the whole batch at once."""
        t = p.transition
        if t.create is not None and not self._insert(cur, t.create):
            return errors.StoreError(f"instance id {t.instance_id!r} is taken")
        cur.execute(p.sql, p.params)
        row = cur.fetchone()
        if row is None:
            return self._refused(cur, t)
        return self._matched(cur, p, rows, int(row[0]), row[1])

    def _matched(self, cur: Any, p: _Prepared, rows: _Rows, seq: int, status: Any) -> Result:
        """A transition whose fenced UPDATE matched: on SQLite its step and history rows go to
        ``rows`` (numbered up to ``seq``, the ``history_seq`` the UPDATE left), then its
        signals; its result is the instance's status after it."""
        t = p.transition
        if not self.pg:
            rows.steps += p.steps
            first = seq - len(p.history)  # the seq numbers the UPDATE reserved
            rows.history += self.fast.history_rows(t.instance_id, first, p.history)
        if t.notify or t.consume_events:
            self._signals(cur, t)
        return str(status)

    def _groupable(self, prepared: list[_Prepared]) -> bool:
        """Several instances, each once (SQLite): their UPDATEs can go in one statement."""
        if len(prepared) < 2 or not _UPDATE_FROM:
            return False
        return len({p.transition.instance_id for p in prepared}) == len(prepared)

    def _insert_new(self, cur: Any, prepared: list[_Prepared]) -> None:
        """The rows of instances born in this batch, before any UPDATE; an id taken sends the
        batch back to one UPDATE each, where that transition alone fails."""
        for p in prepared:
            if p.transition.create is not None and not self._insert(cur, p.transition.create):
                raise _Unmatched

    def _apply_all(self, cur: Any, prepared: list[_Prepared], rows: _Rows) -> list[Result]:
        """``_apply`` for a whole batch (SQLite) in a few statements: the UPDATEs of each shape
        in one, fenced by its row count, then one read of every instance's ``history_seq``
        and status. Each statement the committer runs is one wait for the GIL, which the
        event loop, busy with the runners of the last commit, holds for milliseconds."""
        self._insert_new(cur, prepared)
        shapes: dict[str, list[tuple[Any, ...]]] = {}
        for p in prepared:
            shapes.setdefault(p.sql, []).append(p.params)
        for sql, params in shapes.items():
            size = max(1, self._variables // len(params[0]))
            for done in range(0, len(params), size):
                chunk = params[done : done + size]
                cur.execute(*self.fast.batch_update(sql, chunk))
                if cur.rowcount != len(chunk):
                    raise _Unmatched
        ids = [p.transition.instance_id for p in prepared]
        cur.execute(self.fast.seq_and_status_of(len(ids)), ids)
        after = {i: (seq, status) for i, seq, status in json.loads(cur.fetchone()[0])}
        return [self._matched(cur, p, rows, *after[p.transition.instance_id]) for p in prepared]

    def _apply_pipelined(self, cur: Any, prepared: list[_Prepared], rows: _Rows) -> list[Result]:
        """``_apply`` for a whole batch (Postgres): each shape's statements sent at once
        (psycopg's ``executemany``, pipelined), their results read after. One round trip
        each made a batch of 100 take ~30 ms, most of it waiting on the network and then on
        the GIL, which the event loop holds."""
        self._insert_new(cur, prepared)
        shapes: dict[str, list[int]] = {}
        for n, p in enumerate(prepared):
            shapes.setdefault(p.sql, []).append(n)
        found: list[Any] = [None] * len(prepared)
        for sql, members in shapes.items():
            cur.executemany(sql, [prepared[n].params for n in members], returning=True)
            for k, n in enumerate(members):
                if k:
                    cur.nextset()
                found[n] = cur.fetchone()
        return [
            self._refused(cur, p.transition)
            if row is None
            else self._matched(cur, p, rows, int(row[0]), row[1])
            for p, row in zip(prepared, found, strict=True)
        ]

    @property
    def _variables(self) -> int:
        """Parameters one statement may bind on the held connection (SQLite)."""
        conn = self._connection().driver_connection
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))

    def _signals(self, cur: Any, t: Transition) -> None:
        """Events sent to other instances (waking them) and inbox events consumed."""
        at = t.history[0].at if t.history else datetime.now(UTC)
        for target, name, data in t.notify:
            cur.execute(
                self.fast.insert_event, (target, name, self.fast.json(data), self.fast.time(at))
            )
            cur.execute(self.fast.wake, (self.fast.time(at), target, *self._runnable))
        if t.consume_events:
            cur.executemany(
                self.fast.consume_event, [(self.fast.time(at), eid) for eid in t.consume_events]
            )

    def _refused(self, cur: Any, t: Transition) -> Result:
        """The fenced UPDATE matched nothing: a pause to honour, or a lease lost."""
        cur.execute(self.fast.lease_of, (t.instance_id,))
        row = cur.fetchone()
        if row is not None and int(row[0]) == t.epoch and row[1] == "paused":
            return InstancePaused(t.instance_id)
        return errors.LeaseLost(f"instance {t.instance_id} is now owned by another worker")


def _settle(outcomes: list[tuple[asyncio.Future[str], Result]]) -> None:
    for fut, result in outcomes:
        if fut.done():  # its runner was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A transition's statement and rows, built outside the transaction."""

    transition: Transition
    sql: str
    params: tuple[Any, ...]
    steps: list[tuple[Any, ...]]  # SQLite: upserts, written with the batch's others
    history: list[tuple[Any, ...]]  # (at, type, step, data); seq comes from the UPDATE


class _Rows:
    """A batch's step and history rows (SQLite), written after all its fenced UPDATEs."""

    def __init__(self) -> None:
        self.steps: list[tuple[Any, ...]] = []
        self.history: list[tuple[Any, ...]] = []

    def flush(self, cur: Any, fast: fastpath.FastPath) -> None:
        # one row per (instance, path): a later transition of the batch (or a map item's
        # plain-path copy) rewrites it, and the last one wins
        steps = list({row[:2]: row for row in self.steps}.values())
        for sql, params in fast.many(fast.upsert_step, steps):
            cur.execute(sql, params)
        for sql, params in fast.many(fast.insert_history, self.history):
            cur.execute(sql, params)
