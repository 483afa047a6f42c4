"""Concurrency per key across worker processes: 200 instances of 10 keys under ``limit: 1``,
run by three workers on Postgres (two on SQLite), one of them SIGKILLed mid-run. The handlers'
own timestamps must never show two instances of one key running at once, and every instance
completes (the dead worker's slot is held until its lease is taken over, then runs on)."""

from __future__ import annotations

import gc
import itertools
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from statemachine import Engine
from tests.integration.programs import worker_keys
from tests.integration.programs.worker_support import Proc, read_lines, wait_until

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
    pytest.mark.slow,
]  # slow: run first (conftest)

KEYS = 10
INSTANCES = 200


def _runs(log: Path, killed_at: float) -> dict[str, list[tuple[float, float, str]]]:
    """Per key, each handler run as (start, end, instance); a run its worker's SIGKILL cut
    short (a start with no end) lasted until the kill, as far as anyone can tell."""
    starts: dict[str, tuple[str, float]] = {}
    runs: dict[str, list[tuple[float, float, str]]] = {}
    for line in read_lines(log):
        iid, key, what, at = line.split()
        if what == "start":
            if iid in starts:  # started again elsewhere: the first run died with its worker
                _, began = starts[iid]
                runs.setdefault(key, []).append((began, killed_at, iid))
            starts[iid] = (key, float(at))
        else:
            _, began = starts.pop(iid)
            runs.setdefault(key, []).append((began, float(at), iid))
    for iid, (key, began) in starts.items():
        runs.setdefault(key, []).append((began, killed_at, iid))
    return runs


def test_one_instance_per_key_across_workers_and_a_sigkill(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "holds.log"
    parent = Engine(db_url)
    try:
        parent.register(worker_keys.definition(), check_actions=False)
        ids = [
            parent.start(worker_keys.WORKFLOW, {"key": f"k{n % KEYS}"}) for n in range(INSTANCES)
        ]
        n_workers = 3 if db_url.startswith("postgresql") else 2
        procs = [
            Proc.program("worker_keys", [db_url, str(log)], tmp_path, f"worker{n}")
            for n in range(n_workers)
        ]
        try:
            wait_until("a quarter of the runs", lambda: len(read_lines(log)) >= 100, 120)
            procs[0].sigkill()
            killed_at = time.time()
            for proc in procs[1:]:
                assert proc.wait(240) == 0, proc.describe()
        finally:
            for proc in procs:
                proc.cleanup()
        statuses = Counter(parent.get(i).status for i in ids)
        assert statuses == {"completed": INSTANCES}, [parent.get(i) for i in ids][:3]
        runs = _runs(log, killed_at)
        assert sorted(runs) == sorted(f"k{n}" for n in range(KEYS))
        for key, spans in runs.items():
            spans.sort()
            for (_, end, before), (start, _, after) in itertools.pairwise(spans):
                assert start >= end, (
                    f"{key}: {after} started at {start} before {before} ended {end}"
                )
        done = {iid for spans in runs.values() for _, _, iid in spans}
        assert done == set(ids)
    finally:
        parent.close()
        gc.collect()
