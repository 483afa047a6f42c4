"""Several processes writing one SQLite file at once never see "database is locked".

``WRITERS`` processes (``programs/worker_sqlite_writers.py``), each with its own Engine, execute
small workflows back to back for ``SM_SQLITE_WRITERS_SECONDS`` (default 10: thousands of
transactions; set it higher for a soak). Every write
transaction is ``BEGIN IMMEDIATE`` under a busy timeout, so contention must only ever wait:
each process exits 0 and reports how many instances it ran, and all of them are completed.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import pytest

from statemachine import Engine
from tests.integration.programs import worker_sqlite_writers as sw
from tests.integration.programs.worker_support import LOCKED, Proc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
]

WRITERS = 4
SECONDS = float(os.environ.get("SM_SQLITE_WRITERS_SECONDS", "10"))


def _all(engine: Engine, status: str | None) -> list[str]:
    ids: list[str] = []
    while batch := engine.list(workflow=sw.WORKFLOW, status=status, limit=1000, offset=len(ids)):
        ids.extend(i.id for i in batch)
    return ids


def test_four_processes_share_one_sqlite_file_without_lock_errors(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = Engine(sqlite_url)  # creates the schema once, before the writers race for it
    procs: list[Proc] = []
    try:
        sw.setup(engine)
        for n in range(WRITERS):
            args = [sqlite_url, str(SECONDS), f"p{n}"]
            procs.append(Proc.program("worker_sqlite_writers", args, tmp_path, f"writer-{n}"))
        ran: dict[str, int] = {}
        for proc in procs:
            rc = proc.wait(timeout=SECONDS + 60)
            assert LOCKED not in proc.stderr(), proc.describe()
            assert rc == 0, proc.describe()
            report = json.loads(proc.stdout().strip().splitlines()[-1])
            ran[report["tag"]] = report["ran"]
        print(f"instances run per process in {SECONDS:.0f}s: {ran}")
        assert all(n > 0 for n in ran.values()), ran

        expected = {f"{tag}-{i}" for tag, n in ran.items() for i in range(n)}
        completed = set(_all(engine, "completed"))
        assert completed == expected
        assert set(_all(engine, None)) == expected  # nothing else is left, in any status
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()
