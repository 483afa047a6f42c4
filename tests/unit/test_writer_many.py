"""``Writer.many``: a batch's rows as a few multi-row statements of recurring shapes."""

from __future__ import annotations

import sqlite3

import pytest

from statemachine.store import tables
from statemachine.store.sql_common import Writer


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, []),
        (1, [1]),
        (3, [3]),  # a sequential step's history rows: one statement
        (8, [8]),
        (9, [8, 1]),
        (63, [32, 16, 8, 7]),
        (64, [64]),
        (65, [64, 1]),
        (150, [64, 64, 16, 6]),
        (1000, [64] * 15 + [32, 8]),
    ],
)
def test_every_row_is_written_once_in_chunks_of_recurring_sizes(
    count: int, expected: list[int]
) -> None:
    """Up to 8 rows in one statement of their own size; more in 64-row chunks, then falling
    powers of two down to a tail of 8 or fewer: few shapes, each cached by the driver."""
    writer = Writer()
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE sm_history (instance_id, seq, at, type, step, data)")
    rows = [
        ("i", k, "2026-01-01 00:00:00.000000", "t", None, f'{{"k": {k}}}') for k in range(count)
    ]
    sizes = []
    for text, params in writer.many(tables.HISTORY, rows):
        sizes.append(len(params) // 6)
        assert text.count("(?, ?, ?, ?, ?, ?)") == sizes[-1]
        assert text.startswith("INSERT INTO sm_history")
        conn.execute(text, params)
    assert sizes == expected
    assert conn.execute("SELECT * FROM sm_history ORDER BY seq").fetchall() == rows


def test_a_step_row_replaces_the_one_stored_at_its_path() -> None:
    writer = Writer()
    ((text, _),) = writer.many(tables.STEP, [("i", "p", "running") + (None,) * 8])
    assert text.endswith("ON CONFLICT (instance_id, path) DO UPDATE SET status = excluded.status, "
        "input = excluded.input, output = excluded.output, error = excluded.error, "
        "attempts = excluded.attempts, iteration = excluded.iteration, "
        "started_at = excluded.started_at, completed_at = excluded.completed_at, "
        "next_attempt_at = excluded.next_attempt_at")  # fmt: skip
