"""Postgres' quirks of the writer: typed parameters, leases on the database's clock, and one
round trip per transition.

A transition is one statement: its fenced UPDATE, step upserts and history inserts as
data-modifying CTEs (the rows are written only if the UPDATE matched), and a batch's statements
are sent pipelined (psycopg's ``executemany``), their results read after: one round trip each
made a batch of 100 take ~30 ms, most of it waiting on the network and then on the GIL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

import sqlalchemy as sa

from statemachine.store.records import Transition
from statemachine.store.sql_common import (
    HISTORY,
    HISTORY_COLUMNS,
    STEP,
    STEP_COLUMNS,
    Cursor,
    Prepared,
    Result,
    Shape,
    Writer,
)

_HISTORY_VALUES = HISTORY_COLUMNS[2:]  # (at, type, step, data): the seq comes from the UPDATE


def _type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return "json"
    if isinstance(kind, sa.DateTime):
        return "timestamptz"
    if isinstance(kind, sa.Boolean):
        return "boolean"
    return "integer" if isinstance(kind, sa.Integer) else "text"


class PostgresWriter(Writer):
    def __init__(self) -> None:
        super().__init__()
        self._statements: dict[tuple[Shape, int, int], str] = {}
        self._keys: dict[tuple[str, int], list[str]] = {}

    PLACEHOLDER = "%s"

    @staticmethod
    def mark(name: str) -> str:
        return f"%({name})s"

    @staticmethod
    def cast(mark: str, column: sa.Column[Any]) -> str:
        return f"CAST({mark} AS {_type(column)})"

    def lease(self, until: datetime | None, now: datetime | None) -> timedelta | None:
        """Only the lease's length: it runs from the database's now() (``lease_expression``),
        so every lease is set and compared on one clock, whatever each worker's says."""
        if until is None:
            return None
        return until - (now or datetime.now(UTC))

    def lease_expression(self, mark: str) -> str:
        return f"now() + CAST({mark} AS interval)"

    def prepare(self, t: Transition) -> Prepared:
        p = super().prepare(t)
        p.params.update(
            zip(self._row_keys("s", len(p.steps)), chain.from_iterable(p.steps), strict=True)
        )
        history = chain.from_iterable(p.history)
        p.params.update(zip(self._row_keys("h", len(p.history)), history, strict=True))
        return p

    def _row_keys(self, kind: str, count: int) -> list[str]:
        keys = self._keys.get((kind, count))
        if keys is None:
            columns = STEP_COLUMNS if kind == "s" else _HISTORY_VALUES
            keys = self._keys[(kind, count)] = [
                f"{kind}{n}_{c}" for n in range(count) for c in columns
            ]
        return keys

    def statement(self, p: Prepared) -> str:
        key = (p.shape, len(p.steps), len(p.history))
        sql = self._statements.get(key)
        if sql is None:
            sql = self._statements[key] = self._transition(*key)
        return sql

    def _transition(self, shape: Shape, steps: int, history: int) -> str:
        parts = [f"WITH u AS ({self.update(shape)})"]
        if steps:
            columns = ", ".join(STEP_COLUMNS)
            rows = ", ".join(
                "("
                + ", ".join(self.cast(self.mark(f"s{n}_{c}"), STEP.c[c]) for c in STEP_COLUMNS)
                + ")"
                for n in range(steps)
            )
            parts.append(
                f", s AS (INSERT INTO {STEP.name} ({columns}) SELECT v.* FROM (VALUES {rows}) "
                f"AS v ({columns}) WHERE EXISTS (SELECT 1 FROM u) {self.on_conflict(STEP)})"
            )
        if history:
            values = ", ".join(_HISTORY_VALUES)
            rows = ", ".join(
                f"({n + 1}, "
                + ", ".join(
                    self.cast(self.mark(f"h{n}_{c}"), HISTORY.c[c]) for c in _HISTORY_VALUES
                )
                + ")"
                for n in range(history)
            )
            parts.append(
                f", h AS (INSERT INTO {HISTORY.name} ({', '.join(HISTORY_COLUMNS)}) "
                f"SELECT CAST({self.mark('id')} AS text), u.history_seq - {history} + v.k, "
                f"{', '.join('v.' + c for c in _HISTORY_VALUES)} "
                f"FROM u, (VALUES {rows}) AS v (k, {values}))"
            )
        parts.append(" SELECT history_seq, status FROM u")
        return "".join(parts)

    def apply(self, cur: Cursor, prepared: list[Prepared], group: bool) -> list[Result]:
        """A batch's statements of each shape sent at once, pipelined; results read after."""
        if not group or len(prepared) < 2:
            return super().apply(cur, prepared, group)
        self.insert_new(cur, prepared)
        shapes: dict[str, list[int]] = {}
        for n, p in enumerate(prepared):
            shapes.setdefault(self.statement(p), []).append(n)
        found: list[Any] = [None] * len(prepared)
        for sql, members in shapes.items():
            cur.executemany(sql, [prepared[n].params for n in members], returning=True)
            for k, n in enumerate(members):
                if k:
                    cur.nextset()
                found[n] = cur.fetchone()
        return [
            self.refused(cur, p.transition)
            if row is None
            else self.matched(cur, p, int(row[0]), row[1])
            for p, row in zip(prepared, found, strict=True)
        ]
