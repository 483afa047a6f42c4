"""The per-step commit in plain DBAPI SQL: building SQLAlchemy statements and binding their
parameters cost more than the commit itself (measured: ~400 µs of ~600 µs per step on SQLite).

Values are written exactly as the SQLAlchemy column types write them (JSON as ``json.dumps``
text; SQLite timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC), so both paths read alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from statemachine import jsontext, records

_TERMINAL = ", ".join(f"'{s}'" for s in sorted(records.TERMINAL))
_STEP_COLUMNS = (
    "status", "input", "output", "error", "attempts", "iteration", "started_at", "completed_at", "next_attempt_at",
)  # fmt: skip
_JSON_STEP = {"input", "output", "error"}
_JSON_INSTANCE = {"input", "output", "error", "metadata", "state"}
# rows per multi-row statement: 64 x 11 parameters stays under SQLite's oldest limit (999)
_CHUNK = 64
_EXACT = 8  # this many rows or fewer go in one statement of their own size


# Postgres: a lease runs from the database's clock (its length is the parameter)
_LEASE = "now() + CAST(? AS interval)"
_dumps = jsontext.encoder(allow_nan=True)  # as the SQLAlchemy JSON type writes it (json.dumps)


class FastPath:
    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        self._times: dict[datetime, str] = {}  # recent timestamps, formatted
        j = "CAST(? AS json)" if self.pg else "?"
        # a pause that landed while the step ran is kept, unless the workflow just ended; a
        # runner that knows it is paused sends no status (NULL) and keeps the stored one
        self._json_cast = j
        self._updates: dict[tuple[bool, bool, bool], str] = {}
        self._batch_updates: dict[tuple[str, int], str] = {}
        self._transitions: dict[tuple[str, int, int], str] = {}
        self._many: dict[tuple[str, int], str] = {}
        columns = ", ".join(("instance_id", "path", *_STEP_COLUMNS))
        values = ", ".join(["?", "?"] + [j if c in _JSON_STEP else "?" for c in _STEP_COLUMNS])
        updates = ", ".join(f"{c} = excluded.{c}" for c in _STEP_COLUMNS)
        self.upsert_step = self._sql(
            f"INSERT INTO sm_step ({columns}) VALUES ({values}) "
            f"ON CONFLICT (instance_id, path) DO UPDATE SET {updates}"
        )
        self.insert_history = self._sql(
            f"INSERT INTO sm_history (instance_id, seq, at, type, step, data) VALUES (?, ?, ?, ?, ?, {j})"
        )
        self.insert_event = self._sql(
            f"INSERT INTO sm_event (instance_id, name, data, received_at) VALUES (?, ?, {j}, ?)"
        )
        runnable = ", ".join("?" for _ in range(4))
        self.wake = self._sql(
            f"UPDATE sm_instance SET wake_at = ? WHERE id = ? AND status IN ({runnable})"
        )
        self.consume_event = self._sql("UPDATE sm_event SET consumed_at = ? WHERE id = ?")
        self.lease_of = self._sql("SELECT lease_epoch, status FROM sm_instance WHERE id = ?")

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.pg else text

    def time(self, value: datetime | None) -> Any:
        if value is None or self.pg:
            return value
        # a transition repeats its ``now`` many times, and rewrites the step it started last time
        text = self._times.get(value)
        if text is None:
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            text = utc.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
            if len(self._times) >= 512:
                self._times.clear()
            self._times[value] = text
        return text

    @staticmethod
    def json(value: Any) -> str:
        return "null" if value is None else _dumps(value)

    def lease(self, values: dict[str, Any]) -> Any:
        """The ``lease_expires_at`` parameter of a row the engine writes: the engine sets it to
        its now + the lease, with ``updated_at`` its now. Postgres keeps only the lease's
        length (``_LEASE``: it runs from the database's now(), so every lease is set and
        compared on one clock, whatever each worker's says); SQLite, the time itself."""
        until = values["lease_expires_at"]
        if until is None or not self.pg:
            return self.time(until)
        return until - values["updated_at"]

    def insert_instance(self, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """INSERT a new instance unless its id exists (RETURNING tells which: rowcount lies)."""
        columns = list(values)
        lease = _LEASE if self.pg else "?"
        marks = ", ".join(
            self._json_cast if c in _JSON_INSTANCE else lease if c == "lease_expires_at" else "?"
            for c in columns
        )
        sql = self._sql(
            f"INSERT INTO sm_instance ({', '.join(columns)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        return sql, tuple(self._insert_param(values, c) for c in columns)

    def _insert_param(self, values: dict[str, Any], column: str) -> Any:
        value = values[column]
        if column in _JSON_INSTANCE:
            return self.json(value)
        if column == "lease_expires_at":
            return self.lease(values)
        return self.time(value) if isinstance(value, datetime) else value

    def _update_sql(self, release: bool, status: bool, wake: bool) -> str:
        """The runner's UPDATE, without the columns it knows are already stored: an indexed
        column left out of SET leaves its index pages alone (fewer pages in each commit)."""
        key = (release, status, wake)
        sql = self._updates.get(key)
        if sql is None:
            j = self._json_cast
            sets = []
            if status:
                # a pause that landed while the step ran is kept, unless the workflow just ended;
                # a runner that knows it is paused sends no status (NULL) and keeps the stored one
                sets.append(
                    f"status = CASE WHEN status = 'paused' AND COALESCE(?, 'paused') NOT IN ({_TERMINAL}) "
                    "THEN 'paused' ELSE COALESCE(?, status) END"
                )
            sets += [f"state = {j}", "current_step = ?", f"output = {j}", f"error = {j}"]
            if wake:
                sets.append("wake_at = ?")
            sets += ["started_at = ?", "completed_at = ?", "updated_at = ?"]
            # the fenced UPDATE is a heartbeat too: a runner that commits needs no other
            lease = f"lease_expires_at = {_LEASE if self.pg else '?'}"
            sets.append("lease_owner = NULL, lease_expires_at = NULL" if release else lease)
            sets.append("history_seq = history_seq + ?")
            sql = self._updates[key] = self._sql(
                f"UPDATE sm_instance SET {', '.join(sets)} "
                "WHERE id = ? AND lease_epoch = ? AND (? = 0 OR status <> 'paused') "
                "RETURNING history_seq, status"
            )
        return sql

    def runner_update(
        self,
        values: dict[str, Any],
        instance_id: str,
        epoch: int,
        count: int,
        release: bool,
        abort_if_paused: bool = False,
        stored: frozenset[str] = frozenset(),
    ) -> tuple[str, tuple[Any, ...]]:
        """The fenced UPDATE of a runner's transition; ``release`` also drops the lease (the end),
        ``abort_if_paused`` makes it match nothing while the instance is paused, and the
        columns in ``stored`` (``status``, ``wake_at``) are already right and left alone."""
        set_status, set_wake = "status" not in stored, "wake_at" not in stored
        params: list[Any] = []
        if set_status:
            status = None if values["status"] == "paused" else values["status"]
            params += [status, status]
        params += [
            self.json(values["state"]), values["current_step"], self.json(values["output"]),
            self.json(values["error"]),
        ]  # fmt: skip
        if set_wake:
            params.append(self.time(values["wake_at"]))
        params += [
            self.time(values["started_at"]), self.time(values["completed_at"]),
            self.time(values["updated_at"]),
        ]  # fmt: skip
        if not release:
            params.append(self.lease(values))
        params += [count, instance_id, epoch, int(abort_if_paused)]
        return self._update_sql(release, set_status, set_wake), tuple(params)

    def batch_update(self, sql: str, rows: list[tuple[Any, ...]]) -> tuple[str, tuple[Any, ...]]:
        """SQLite: ``len(rows)`` of ``runner_update``'s UPDATEs of one shape (``sql``) as one
        statement over a ``VALUES`` list, without RETURNING. Every row a statement steps
        through is one more wait for the GIL in the committer thread, and with hundreds of
        instances in flight the event loop holds the GIL for milliseconds at a time; the
        caller checks the row count instead (the fence: each row must match)."""
        key = (sql, len(rows))
        text = self._batch_updates.get(key)
        if text is None:
            update, _, _ = sql.partition(" RETURNING ")
            head, _, where = update.partition(" WHERE ")
            refs = iter(range(1, len(rows[0]) + 1))
            marks = f"({', '.join('?' * len(rows[0]))})"

            def columns(part: str) -> str:
                return "".join(
                    f"{piece}v.column{next(refs)}" if n < part.count("?") else piece
                    for n, piece in enumerate(part.split("?"))
                )

            text = self._batch_updates[key] = (
                f"{columns(head)} FROM (VALUES {', '.join([marks] * len(rows))}) AS v "
                f"WHERE {columns(where)}"
            )
            if len(self._batch_updates) > 64:  # sizes vary with the batch: keep a few
                self._batch_updates.clear()
                self._batch_updates[key] = text
        return text, tuple(chain.from_iterable(rows))

    def seq_and_status_of(self, count: int) -> str:
        """SQLite: ``history_seq`` and ``status`` of ``count`` instances as one JSON row (one
        step of the statement, however many instances)."""
        marks = ", ".join("?" * count)
        return (
            "SELECT json_group_array(json_array(id, history_seq, status)) "
            f"FROM sm_instance WHERE id IN ({marks})"
        )

    def pg_transition(
        self,
        update: tuple[str, tuple[Any, ...]],
        instance_id: str,
        steps: list[tuple[Any, ...]],
        history: list[tuple[Any, ...]],
    ) -> tuple[str, tuple[Any, ...]]:
        """Postgres: the fenced UPDATE, the step upserts and the history inserts as one
        statement (data-modifying CTEs), one round trip instead of three; the rows are written
        only if the UPDATE matched. ``history`` rows are ``(at, type, step, data)``."""
        by_path = {row[1]: row for row in steps}  # one row per path: the last one wins
        key = (update[0], len(by_path), len(history))
        sql = self._transitions.get(key)
        if sql is None:
            sql = self._transitions[key] = _pg_transition_sql(*key)
        params = list(update[1])
        for row in by_path.values():
            params.extend(row)
        if history:
            params.append(instance_id)
            for n, row in enumerate(history, start=1):
                params.append(n)
                params.extend(row)
        return sql, tuple(params)

    def many(self, sql: str, rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``sql`` (one ``VALUES`` row) as a few multi-row statements: up to 8 rows in one (a
        sequential step's 3 history rows), more in chunks of 64 and then the rest in powers
        of two, so few statement shapes recur (the driver caches them). Each is one call into
        the database, not one a row (and one wait for the GIL after it)."""
        head, _, tail = sql.partition(") VALUES (")
        row, _, rest = tail.partition(")")
        done = 0
        while done < len(rows):
            left = len(rows) - done
            if left <= _EXACT:
                size = left
            else:
                size = _CHUNK if left >= _CHUNK else 1 << (left.bit_length() - 1)
            key = (sql, size)
            text = self._many.get(key)
            if text is None:
                text = self._many[key] = f"{head}) VALUES {', '.join([f'({row})'] * size)}{rest}"
            yield text, tuple(chain.from_iterable(rows[done : done + size]))
            done += size

    def step_rows(self, instance_id: str, steps: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows in ``_STEP_COLUMNS`` order, after the key."""
        j, t = self.json, self.time
        return [
            (
                instance_id,
                st.path,
                st.status,
                j(st.input),
                j(st.output),
                j(st.error),
                st.attempts,
                st.iteration,
                t(st.started_at),
                t(st.completed_at),
                t(st.next_attempt_at),
            )
            for st in steps
        ]

    def history_values(self, entries: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``(at, type, step, data)`` of each history entry, for ``pg_transition`` and ``history_rows``."""
        return [(self.time(e.at), e.type, e.step, self.json(e.data)) for e in entries]

    @staticmethod
    def history_rows(
        instance_id: str, first_seq: int, values: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``insert_history``: ``history_values`` numbered on from ``first_seq``."""
        return [(instance_id, first_seq + n, *v) for n, v in enumerate(values, start=1)]


_STEP_TYPES = ("text", "text", "text", "json", "json", "json", "integer", "integer", "timestamptz", "timestamptz", "timestamptz")  # fmt: skip


def _pg_transition_sql(update: str, n_steps: int, n_history: int) -> str:
    parts = [f"WITH u AS ({update})"]
    if n_steps:
        columns = ", ".join(("instance_id", "path", *_STEP_COLUMNS))
        row = "(" + ", ".join(f"CAST(%s AS {t})" for t in _STEP_TYPES) + ")"
        updates = ", ".join(f"{c} = excluded.{c}" for c in _STEP_COLUMNS)
        parts.append(
            f", s AS (INSERT INTO sm_step ({columns}) SELECT v.* FROM "
            f"(VALUES {', '.join([row] * n_steps)}) AS v ({columns}) WHERE EXISTS (SELECT 1 FROM u) "
            f"ON CONFLICT (instance_id, path) DO UPDATE SET {updates})"
        )
    if n_history:
        row = "(CAST(%s AS integer), CAST(%s AS timestamptz), CAST(%s AS text), CAST(%s AS text), CAST(%s AS json))"
        parts.append(
            ", h AS (INSERT INTO sm_history (instance_id, seq, at, type, step, data) "
            f"SELECT CAST(%s AS text), u.history_seq - {n_history} + v.k, v.at, v.type, v.step, v.data "
            f"FROM u, (VALUES {', '.join([row] * n_history)}) AS v (k, at, type, step, data))"
        )
    parts.append(" SELECT history_seq, status FROM u")
    return "".join(parts)
