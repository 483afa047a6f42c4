"""``FastPath.many``: a batch's rows as a few multi-row statements of recurring shapes."""

from __future__ import annotations

import sqlite3

import pytest

from statemachine.store.fastpath import FastPath


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
    fast = FastPath("sqlite")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    sql = "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    rows = [(k, f"v{k}") for k in range(count)]
    sizes = []
    for text, params in fast.many(sql, rows):
        sizes.append(len(params) // 2)
        assert text.count("(?, ?)") == sizes[-1] and text.endswith("DO UPDATE SET v = excluded.v")
        conn.execute(text, params)
    assert sizes == expected
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == rows
