"""SQLite's quirks of the writer: timestamps as text, and a batch's UPDATEs in one statement.

With hundreds of instances in flight, the committer thread waits for the GIL (held by the event
loop, busy with the runners of the last commit) after every statement it runs, for milliseconds
at a time: a batch's fenced UPDATEs of one shape go in one statement (``UPDATE ... FROM
(VALUES ...)``), checked by its row count, and every instance's ``history_seq`` and status are
read back in one more; the step and history rows of the whole batch follow in a few multi-row
INSERTs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from statemachine.store.sql_common import (
    HISTORY,
    INSTANCE,
    STEP,
    Cursor,
    Prepared,
    Result,
    Shape,
    Unmatched,
    Writer,
)

_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM (VALUES ...)
# ``history_seq`` and ``status`` of many instances as one JSON row (one step of the statement)
_SEQ_AND_STATUS = (
    f"SELECT json_group_array(json_array(id, history_seq, status)) FROM {INSTANCE.name} "
    "WHERE id IN (SELECT value FROM json_each(:ids))"
)


class SqliteWriter(Writer):
    def __init__(self, variables: Callable[[], int]) -> None:
        """``variables``: how many parameters one statement may bind on the connection."""
        super().__init__()
        self._variables = variables
        self._times: dict[datetime, str] = {}  # recent timestamps, formatted
        self._names: dict[Shape, list[str]] = {}
        self._batches: dict[tuple[Shape, int], str] = {}
        self._steps: list[tuple[Any, ...]] = []  # the batch's rows, written after its UPDATEs
        self._history: list[tuple[Any, ...]] = []

    def time(self, value: datetime | None) -> Any:
        """As the SQLAlchemy type stores it: ``YYYY-MM-DD HH:MM:SS.ffffff``, in UTC."""
        if value is None:
            return None
        # a transition repeats its ``now`` many times, and rewrites the step it started last time
        text = self._times.get(value)
        if text is None:
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            text = utc.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
            if len(self._times) >= 512:
                self._times.clear()
            self._times[value] = text
        return text

    def apply(self, cur: Cursor, prepared: list[Prepared], group: bool) -> list[Result]:
        self._steps, self._history = [], []
        ids = {p.transition.instance_id for p in prepared}
        if group and _UPDATE_FROM and len(prepared) > 1 and len(ids) == len(prepared):
            results = self._apply_all(cur, prepared)
        else:
            results = [self.apply_one(cur, p) for p in prepared]
        # one row per (instance, path): a later transition of the batch rewrites it
        steps = list({row[:2]: row for row in self._steps}.values())
        for sql, params in self.many(STEP, steps):
            cur.execute(sql, params)
        for sql, params in self.many(HISTORY, self._history):
            cur.execute(sql, params)
        return results

    def matched(self, cur: Cursor, p: Prepared, seq: int, status: Any) -> Result:
        """Its step and history rows join the batch's, numbered up to ``seq``."""
        self._steps += p.steps
        first = seq - len(p.history)  # the seq numbers the UPDATE reserved
        self._history += self.history_rows(p.transition.instance_id, first, p.history)
        return super().matched(cur, p, seq, status)

    def _apply_all(self, cur: Cursor, prepared: list[Prepared]) -> list[Result]:
        """Several instances, each once: the UPDATEs of each shape in one statement, fenced by
        its row count, then one read of every instance's ``history_seq`` and status."""
        self.insert_new(cur, prepared)
        shapes: dict[Shape, list[Prepared]] = {}
        for p in prepared:
            shapes.setdefault(p.shape, []).append(p)
        for shape, members in shapes.items():
            names = self._parameters(shape)
            size = max(1, self._variables() // len(names))
            for done in range(0, len(members), size):
                chunk = members[done : done + size]
                values = chain.from_iterable([p.params[n] for n in names] for p in chunk)
                cur.execute(self._batch(shape, len(chunk)), tuple(values))
                if cur.rowcount != len(chunk):
                    raise Unmatched
        ids = [p.transition.instance_id for p in prepared]
        cur.execute(_SEQ_AND_STATUS, {"ids": json.dumps(ids)})
        after = {i: (seq, status) for i, seq, status in json.loads(cur.fetchone()[0])}
        return [self.matched(cur, p, *after[p.transition.instance_id]) for p in prepared]

    def _parameters(self, shape: Shape) -> list[str]:
        """The parameters of ``shape``'s UPDATE, in the order they first appear."""
        names = self._names.get(shape)
        if names is None:
            names = self._names[shape] = []

            def record(name: str) -> str:
                if name not in names:
                    names.append(name)
                return ""

            self.update_sql(shape, record)
        return names

    def _batch(self, shape: Shape, count: int) -> str:
        """``count`` UPDATEs of ``shape`` as one, from a ``VALUES`` list (its columns are
        ``v.column1``..., in the order of ``_parameters``), without RETURNING. The list's
        parameters are positional: SQLite parses named ones in time quadratic in their number."""
        found = self._batches.get((shape, count))
        if found is None:
            names = self._parameters(shape)
            row = "(" + ", ".join([self.PLACEHOLDER] * len(names)) + ")"
            column = {name: f"v.column{k}" for k, name in enumerate(names, start=1)}
            source = f" FROM (VALUES {', '.join([row] * count)}) AS v"
            if len(self._batches) > 64:  # sizes vary with the batch: keep a few
                self._batches.clear()
            found = self._batches[(shape, count)] = self.update_sql(
                shape, column.__getitem__, source
            )
        return found
