"""SQLite reads do not queue behind another process's write transaction.

WAL lets a reader see the last committed snapshot while a writer holds the lock, but only if the
read is a deferred transaction: a read opened with ``BEGIN IMMEDIATE`` asks for the write lock
and waits the whole busy timeout for it. Here a second real process holds ``BEGIN IMMEDIATE`` on
the file for a few seconds while this one reads.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, workflow

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

HOLD = 3.0  # seconds the other process holds the write lock
QUICK = 0.5  # a read must return well within it

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE sm_instance SET updated_at = updated_at")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_reads_do_not_wait_for_another_process_holding_the_write_lock(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = Engine(sqlite_url)
    holder: subprocess.Popen[str] | None = None
    try:
        engine.action("noop")(lambda data: data)
        engine.register(workflow("reads").task("a", "noop").build())
        iid = engine.execute("reads", {"n": 1}).id
        path = sqlite_url.removeprefix("sqlite:///")
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, path, str(HOLD)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        reads: dict[str, Callable[[], Any]] = {
            "get": lambda: engine.get(iid),
            "list": lambda: engine.list(workflow="reads"),
            "history": lambda: engine.history(iid),
        }
        took = {}
        for name, read in reads.items():
            began = time.monotonic()
            read()
            took[name] = time.monotonic() - began
        assert all(t < QUICK for t in took.values()), took
        assert holder.poll() is None, "the other process let go of the lock too early"
        assert engine.get(iid).status == "completed"
    finally:
        if holder is not None:
            holder.wait(timeout=30)
            if holder.stdout is not None:
                holder.stdout.close()
        engine.close()
        gc.collect()
