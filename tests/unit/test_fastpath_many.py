"""``FastPath.many``: a batch's rows as a few multi-row statements of recurring shapes."""

from __future__ import annotations

import sqlite3

import pytest

from statemachine.store.fastpath import FastPath


@pytest.mark.parametrize("count", [0, 1, 2, 3, 63, 64, 65, 150, 1000])
def test_every_row_is_written_once_in_chunks_of_recurring_sizes(count: int) -> None:
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
    assert sum(sizes) == count
    # 64-row chunks, then the rest in falling powers of two: few shapes, each cached
    assert all(s == 64 for s in sizes[: count // 64])
    assert sizes[count // 64 :] == [1 << b for b in range(6, -1, -1) if (count % 64) & (1 << b)]
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == rows
