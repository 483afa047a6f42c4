"""The one writer of transitions: every statement a commit runs, built from ``tables``.

A ``Transition`` becomes one fenced UPDATE of its instance (the columns it sets, nothing else),
its step upserts and history inserts, and its signals (events to other instances, inbox events
consumed). Statements use named parameters; table and column names come from ``tables``. The
dialects (``sqlite.SqliteWriter``, ``postgres.PostgresWriter``) override only their quirks:
parameter marks and casts, how timestamps and leases are passed, and how a batch is sent.
Statements are built once per shape (which columns, which conditions) and cached: building
them per step would cost more than the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import sqlalchemy as sa

from statemachine import errors, jsontext
from statemachine.store import tables
from statemachine.store.records import (
    KEEP,
    InstancePaused,
    NewInstance,
    StepWrite,
    Transition,
)
from statemachine.vocabulary import RUNNABLE, TERMINAL, InstanceStatus

Result = str | BaseException
Cursor = Any  # a DB-API cursor of the driver (sqlite3 or psycopg)

INSTANCE, STEP, HISTORY, EVENT = tables.INSTANCE, tables.STEP, tables.HISTORY, tables.EVENT
STEP_COLUMNS = tuple(c.name for c in STEP.columns)
HISTORY_COLUMNS = tuple(c.name for c in HISTORY.columns)
# ``step_rows`` and ``history_rows`` build their tuples in this order
assert STEP_COLUMNS == (
    "instance_id", "path", "status", "input", "output", "error", "attempts", "iteration",
    "started_at", "completed_at", "next_attempt_at",
)  # fmt: skip
assert HISTORY_COLUMNS == ("instance_id", "seq", "at", "type", "step", "data")
PAUSED = InstanceStatus.PAUSED.value
_CHUNK = 64  # rows per multi-row statement: 64 x 11 parameters stays under SQLite's oldest limit
_EXACT = 8  # this many rows or fewer go in one statement of their own size
_dumps = jsontext.encoder(allow_nan=True)  # as the SQLAlchemy JSON type writes it (json.dumps)


def _listed(statuses: frozenset[InstanceStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


def pause_rule(status: str) -> str:
    """The status a fenced transition leaves: a pause that landed while its step ran is kept,
    unless the workflow just ended. (A runner that knows it is paused sends no status at all:
    ``Writer.prepare`` leaves the stored one.)"""
    return (
        f"CASE WHEN status = '{PAUSED}' AND {status} NOT IN ({_listed(TERMINAL)}) "
        f"THEN status ELSE {status} END"
    )


@dataclass(frozen=True, slots=True)
class Shape:
    """What a transition's UPDATE looks like; its text is built once per shape."""

    columns: tuple[str, ...]  # the instance columns it sets
    fenced: bool  # on the lease epoch (a runner's), with the pause rule
    release: bool  # gives the lease up (its ``lease_expires_at`` is None)
    fence: bool  # takes the lease from its holder
    expect_status: int | None  # how many statuses it may apply in, None: any
    expect_seq: bool  # only while nothing else happened to the instance


@dataclass(slots=True)
class Prepared:
    """A transition's parameters and rows, built before the write lock is taken."""

    transition: Transition
    shape: Shape
    params: dict[str, Any]
    steps: list[tuple[Any, ...]]  # ``STEP_COLUMNS`` order, one per path (the last one wins)
    history: list[tuple[Any, ...]]  # (at, type, step, data); the seq comes from the UPDATE


class Unmatched(Exception):
    """A grouped UPDATE matched fewer rows than it carried (a lease lost, a pause, an id taken):
    the batch is rolled back and written again, one transition at a time, so that only the ones
    refused fail."""


class Writer:
    """The statements of the SQLite dialect, which needs no cast; ``postgres`` overrides."""

    def __init__(self) -> None:
        self._updates: dict[Shape, str] = {}
        self._many: dict[tuple[str, int], str] = {}
        # how each instance column's value becomes its parameter, looked up once per column
        self._convert: dict[str, Callable[[Any], Any] | None] = {
            c.name: self.json
            if isinstance(c.type, sa.JSON)
            else self.time
            if isinstance(c.type, sa.DateTime)
            else None
            for c in INSTANCE.columns
        }
        mark, cast = self.mark, self.cast
        self.insert_event = (
            f"INSERT INTO {EVENT.name} (instance_id, name, data, received_at) VALUES "
            f"({mark('instance_id')}, {mark('name')}, {cast(mark('data'), EVENT.c.data)}, "
            f"{mark('at')})"
        )
        self.wake = (
            f"UPDATE {INSTANCE.name} SET wake_at = {mark('at')} "
            f"WHERE id = {mark('id')} AND status IN ({_listed(RUNNABLE)})"
        )
        self.consume_event = (
            f"UPDATE {EVENT.name} SET consumed_at = {mark('at')} WHERE id = {mark('id')}"
        )
        self.lease_of = f"SELECT lease_epoch, status FROM {INSTANCE.name} WHERE id = {mark('id')}"
        self.drop_step = (
            f"DELETE FROM {STEP.name} WHERE instance_id = {mark('id')} AND path = {mark('path')}"
        )

    # -- the dialect's quirks ------------------------------------------------------------
    PLACEHOLDER = "?"  # a positional parameter: the rows of a multi-row statement (``many``)

    @staticmethod
    def mark(name: str) -> str:
        """The named parameter ``name`` in a statement's text."""
        return f":{name}"

    @staticmethod
    def cast(mark: str, column: sa.Column[Any]) -> str:
        """A parameter as a value of ``column``'s type (Postgres types JSON text)."""
        return mark

    def time(self, value: datetime | None) -> Any:
        return value

    def lease(self, until: datetime | None, now: datetime | None) -> Any:
        """The ``lease_expires_at`` parameter of a row the engine writes at ``now``."""
        return self.time(until)

    def lease_expression(self, mark: str) -> str:
        return mark

    @staticmethod
    def json(value: Any) -> str:
        return "null" if value is None else _dumps(value)

    # -- statements ----------------------------------------------------------------------
    def update_sql(self, shape: Shape, ref: Callable[[str], str], source: str = "") -> str:
        """The fenced UPDATE of a transition of ``shape``; ``ref`` writes a parameter's
        reference (a mark, or a column of the ``source`` a batch updates from)."""
        sets = []
        for name in shape.columns:
            if name == "lease_expires_at":
                sets.append(
                    "lease_owner = NULL, lease_expires_at = NULL"
                    if shape.release
                    else f"lease_expires_at = {self.lease_expression(ref(name))}"
                )
            elif name == "status" and shape.fenced:
                sets.append(f"status = {pause_rule(ref(name))}")
            else:
                sets.append(f"{name} = {self.cast(ref(name), INSTANCE.c[name])}")
        if shape.fence:
            sets.append(
                "lease_epoch = lease_epoch + 1, lease_owner = NULL, lease_expires_at = NULL"
            )
        sets.append(f"history_seq = history_seq + {ref('history_count')}")
        where = [f"id = {ref('id')}"]
        if shape.fenced:
            where.append(f"lease_epoch = {ref('epoch')}")
            where.append(f"({ref('abort')} = 0 OR status <> '{PAUSED}')")
        if shape.expect_status is not None:
            allowed = ", ".join(ref(f"expect_{n}") for n in range(shape.expect_status))
            where.append(f"status IN ({allowed})" if allowed else "1 = 0")
        if shape.expect_seq:
            where.append(f"history_seq = {ref('expect_seq')}")
        return f"UPDATE {INSTANCE.name} SET {', '.join(sets)}{source} WHERE {' AND '.join(where)}"

    def update(self, shape: Shape) -> str:
        sql = self._updates.get(shape)
        if sql is None:
            sql = self._updates[shape] = (
                self.update_sql(shape, self.mark) + " RETURNING history_seq, status"
            )
        return sql

    def statement(self, p: Prepared) -> str:
        """The statement that applies ``p`` (Postgres' also writes its rows)."""
        return self.update(p.shape)

    def insert_instance(self, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """INSERT a new instance unless its id exists (RETURNING tells which: rowcount lies)."""
        marks = []
        params: dict[str, Any] = {}
        for name, value in values.items():
            column = INSTANCE.c[name]
            if name == "lease_expires_at":
                marks.append(self.lease_expression(self.mark(name)))
                params[name] = self.lease(value, values["updated_at"])
            else:
                marks.append(self.cast(self.mark(name), column))
                params[name] = self._value(column, value)
        sql = (
            f"INSERT INTO {INSTANCE.name} ({', '.join(values)}) VALUES ({', '.join(marks)}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        return sql, params

    def _value(self, column: sa.Column[Any], value: Any) -> Any:
        if isinstance(column.type, sa.JSON):
            return self.json(value)
        return self.time(value) if isinstance(value, datetime) else value

    # -- parameters and rows -------------------------------------------------------------
    def prepare(self, t: Transition) -> Prepared:
        """``t``'s shape, parameters and rows. A runner that knows it is paused sends no
        status: the stored one is kept, whatever it is by now (see ``pause_rule``)."""
        fenced = t.epoch is not None
        params: dict[str, Any] = {"id": t.instance_id, "history_count": len(t.history)}
        columns = t.columns
        names = []
        release = False
        convert = self._convert
        for name, value in columns.changed():
            if name == "lease_expires_at":
                release = value is None
                if not release:
                    updated = columns.updated_at
                    params[name] = self.lease(value, None if updated is KEEP else updated)
            elif name == "status" and fenced and value == PAUSED:
                continue
            else:
                to = convert[name]
                params[name] = value if to is None else to(value)
            names.append(name)
        if fenced:
            params["epoch"] = t.epoch
            params["abort"] = int(t.abort_if_paused)
        expect = None if t.expect_status is None else len(t.expect_status)
        for n, status in enumerate(t.expect_status or ()):
            params[f"expect_{n}"] = status
        if t.expect_seq is not None:
            params["expect_seq"] = t.expect_seq
        shape = Shape(tuple(names), fenced, release, t.fence, expect, t.expect_seq is not None)
        history = [(self.time(e.at), e.type, e.step, self.json(e.data)) for e in t.history]
        return Prepared(t, shape, params, self.step_rows(t.instance_id, t.steps), history)

    def step_rows(self, instance_id: str, steps: Sequence[StepWrite]) -> list[tuple[Any, ...]]:
        """Rows in ``STEP_COLUMNS`` order, one per path: a later write of a path (a map item's
        plain-path copy) replaces an earlier one, as a statement may not upsert a row twice."""
        j, t = self.json, self.time
        rows = {
            st.path: (
                instance_id, st.path, st.status, j(st.input), j(st.output), j(st.error),
                st.attempts, st.iteration, t(st.started_at), t(st.completed_at),
                t(st.next_attempt_at),
            )
            for st in steps
        }  # fmt: skip
        return list(rows.values())

    @staticmethod
    def history_rows(
        instance_id: str, first_seq: int, values: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Rows in ``HISTORY_COLUMNS`` order: ``Prepared.history`` numbered on from ``first_seq``."""
        return [(instance_id, first_seq + n, *v) for n, v in enumerate(values, start=1)]

    def many(
        self, table: sa.Table, rows: list[tuple[Any, ...]]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """Rows of ``table`` (in its columns' order; a step's upserted) as a few multi-row
        statements: up to 8 rows in one (a sequential step's 3 history rows), more in chunks
        of 64 and then the rest in powers of two, so few statement shapes recur (the driver
        caches them). Each is one call into the database, not one a row (and one wait for the
        GIL after it). Their parameters are positional (``PLACEHOLDER``): SQLite parses named
        ones in time quadratic in their number, 15 times slower for a 64-row statement."""
        done = 0
        while done < len(rows):
            left = len(rows) - done
            if left <= _EXACT:
                size = left
            else:
                size = _CHUNK if left >= _CHUNK else 1 << (left.bit_length() - 1)
            yield self._many_sql(table, size), tuple(chain.from_iterable(rows[done : done + size]))
            done += size

    def _many_sql(self, table: sa.Table, size: int) -> str:
        found = self._many.get((table.name, size))
        if found is None:
            row = ", ".join(self.cast(self.PLACEHOLDER, c) for c in table.columns)
            rows = ", ".join([f"({row})"] * size)
            found = self._many[(table.name, size)] = self._insert_rows(table, rows)
        return found

    def _insert_rows(self, table: sa.Table, rows: str) -> str:
        """INSERT of ``rows``; a step's row replaces the one stored at its path."""
        columns = [c.name for c in table.columns]
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {rows}"
        return f"{sql} {self.on_conflict(table)}" if table is STEP else sql

    @staticmethod
    def on_conflict(table: sa.Table) -> str:
        """A row that exists already is replaced (a step's, at its path)."""
        keys = [c.name for c in table.primary_key]
        updates = ", ".join(
            f"{c.name} = excluded.{c.name}" for c in table.columns if c.name not in keys
        )
        return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"

    # -- one transaction's work ----------------------------------------------------------
    def insert(self, cur: Cursor, new: NewInstance) -> bool:
        """Insert a new instance row and its first history; False if the id exists already."""
        values = {**new.values, "history_seq": len(new.history)}
        cur.execute(*self.insert_instance(values))
        if cur.fetchone() is None:
            return False
        history = [(self.time(e.at), e.type, e.step, self.json(e.data)) for e in new.history]
        rows = self.history_rows(values["id"], 0, history)
        for sql, params in self.many(HISTORY, rows):
            cur.execute(sql, params)
        return True

    def insert_new(self, cur: Cursor, prepared: list[Prepared]) -> None:
        """The rows of instances born in a batch, before any UPDATE; an id taken sends the
        batch back to one transition at a time, where that one alone fails."""
        for p in prepared:
            if p.transition.create is not None and not self.insert(cur, p.transition.create):
                raise Unmatched

    def apply(self, cur: Cursor, prepared: list[Prepared], group: bool) -> list[Result]:
        """Every transition of a batch, in one transaction: one at a time here; the dialects
        group them when ``group`` (and fall back here when the group did not match)."""
        return [self.apply_one(cur, p) for p in prepared]

    def apply_one(self, cur: Cursor, p: Prepared) -> Result:
        t = p.transition
        if t.create is not None and not self.insert(cur, t.create):
            return errors.StoreError(f"instance id {t.instance_id!r} is taken")
        cur.execute(self.statement(p), p.params)
        row = cur.fetchone()
        if row is None:
            return self.refused(cur, t)
        return self.matched(cur, p, int(row[0]), row[1])

    def matched(self, cur: Cursor, p: Prepared, seq: int, status: Any) -> Result:
        """A transition whose UPDATE matched (leaving ``history_seq`` at ``seq``): its
        signals; its result is the instance's status after it."""
        t = p.transition
        if t.notify or t.consume_events:
            self.signals(cur, t)
        if t.drop_steps:  # paths a migration renamed: never ones it writes (see ``move_rows``)
            rows = [{"id": t.instance_id, "path": path} for path in t.drop_steps]
            cur.executemany(self.drop_step, rows)
        return str(status)

    def signals(self, cur: Cursor, t: Transition) -> None:
        """Events sent to other instances (waking them) and inbox events consumed."""
        at = self.time(t.history[0].at if t.history else datetime.now(UTC))
        for target, name, data in t.notify:
            cur.execute(
                self.insert_event,
                {"instance_id": target, "name": name, "data": self.json(data), "at": at},
            )
            cur.execute(self.wake, {"at": at, "id": target})
        if t.consume_events:
            cur.executemany(self.consume_event, [{"at": at, "id": e} for e in t.consume_events])

    def refused(self, cur: Cursor, t: Transition) -> Result:
        """The UPDATE matched nothing: a control call's condition failed (""), a pause to
        honour, or a lease lost."""
        if t.epoch is None:
            return ""
        cur.execute(self.lease_of, {"id": t.instance_id})
        row = cur.fetchone()
        if row is not None and int(row[0]) == t.epoch and row[1] == PAUSED:
            return InstancePaused(t.instance_id)
        return errors.LeaseLost(f"instance {t.instance_id} is now owned by another worker")
