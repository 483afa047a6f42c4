"""Cost of one durable step, against the floor of what the database must do for it.

(a) floor: raw ``sqlite3`` transactions doing what one step transition does (UPDATE the
    instance row + INSERT a ~200-byte step row + INSERT a history row), on a SQLite file in WAL
    with ``synchronous=FULL``, committed one by one; and the same with ``synchronous=NORMAL``
    (a WAL commit no longer waits for an fsync: what a step costs when durability across power
    loss is traded away);
(b) statemachine: 200 instances of a 10-step sequential workflow with trivial handlers, run with
    ``engine.execute`` one after another, on a SQLite file (WAL, ``synchronous=FULL``, the
    engine's default);
(c) one markdown table: commits/s and µs per commit, steps/s and µs per step, and the ratio
    (µs each / µs per floor commit at ``synchronous=FULL``). Medians of 3 runs, each on a fresh
    temporary file.

``_floor_once`` and ``_engine_once`` are reused by ``bench_dbos``.

Prints the table and writes nothing else (temporary databases are deleted).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from statemachine import Engine, workflow
from statemachine.engine.loop import GC_THRESHOLD, tuned_collector

FLOOR_COMMITS = 2000
INSTANCES = 200
STEPS = 10
RUNS = 3


def _floor_once(path: Path, synchronous: str = "FULL") -> float:
    """Seconds for FLOOR_COMMITS step-shaped transactions, WAL, ``PRAGMA synchronous=<synchronous>``."""
    if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.executescript(
            """
            CREATE TABLE instance (
                id TEXT PRIMARY KEY, status TEXT NOT NULL, state TEXT NOT NULL,
                wake_at TEXT, lease_epoch INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
            CREATE TABLE step_result (
                id INTEGER PRIMARY KEY, instance_id TEXT NOT NULL, path TEXT NOT NULL,
                status TEXT NOT NULL, input TEXT, output TEXT, attempts INTEGER NOT NULL,
                started_at TEXT, completed_at TEXT);
            CREATE INDEX step_result_instance ON step_result (instance_id, path);
            CREATE TABLE history (
                id INTEGER PRIMARY KEY, instance_id TEXT NOT NULL, seq INTEGER NOT NULL,
                at TEXT NOT NULL, type TEXT NOT NULL, step TEXT, data TEXT);
            CREATE UNIQUE INDEX history_instance_seq ON history (instance_id, seq);
            """
        )
        conn.execute(
            "INSERT INTO instance (id, status, state, updated_at) VALUES ('i-1', 'running', '{}', '')"
        )
        output = json.dumps({"value": "x" * 150, "n": 1})  # with the rest of the row: ~200 bytes
        state = json.dumps({"active": ["step-1"], "loops": {}, "order": []})
        now = "2030-01-01T00:00:00+00:00"
        start = time.perf_counter()
        for i in range(FLOOR_COMMITS):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE instance SET status = ?, state = ?, wake_at = ?, updated_at = ? "
                "WHERE id = ? AND lease_epoch = ?",
                ("running", state, now, now, "i-1", 0),
            )
            conn.execute(
                "INSERT INTO step_result (instance_id, path, status, input, output, attempts, "
                "started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("i-1", f"step-{i}", "completed", "{}", output, 1, now, now),
            )
            conn.execute(
                "INSERT INTO history (instance_id, seq, at, type, step, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ("i-1", i + 1, now, "workflow.step.completed", f"step-{i}", output),
            )
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _bench_engine(path: Path) -> Engine:
    """An engine on ``path`` with the STEPS-step trivial workflow "bench", warmed up."""

    def trivial(data: Any) -> Any:
        return data

    builder = workflow("bench")
    for i in range(STEPS):
        builder = builder.task(f"step-{i}", trivial)
    engine = Engine(f"sqlite:///{path}")
    engine.register(builder.build())
    engine.execute("bench", {"n": -1})  # warm-up: schema, loop thread, pools
    return engine


def _engine_once(path: Path) -> float:
    """Seconds to execute INSTANCES instances of a STEPS-step workflow."""

    engine = _bench_engine(path)
    try:
        start = time.perf_counter()
        for i in range(INSTANCES):
            inst = engine.execute("bench", {"n": i})
            if inst.status != "completed":
                raise RuntimeError(f"benchmark instance ended {inst.status}: {inst.error}")
        return time.perf_counter() - start
    finally:
        engine.close()


def _worker_once(path: Path, stats: dict[str, list[float]]) -> float:
    """Seconds for one in-process worker (concurrency=INSTANCES) to drain INSTANCES instances
    started up front: every instance is in flight at once, so their commits are grouped."""

    engine = _bench_engine(path)
    try:
        ids = [engine.start("bench", {"n": i}) for i in range(INSTANCES)]
        committer = engine.repo.committer
        batches, committed = committer.batches, committer.committed
        watch = sqlite3.connect(path)
        count = "SELECT count(*) FROM sm_instance WHERE status = 'completed'"
        start = time.perf_counter()
        with engine.worker(concurrency=INSTANCES, poll_interval="10ms"):
            while watch.execute(count).fetchone()[0] < INSTANCES + 1:
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
        watch.close()
        done = {engine.get(i).status for i in ids}
        if done != {"completed"}:
            raise RuntimeError(f"benchmark instances ended {done}")
        grouped = committer.committed - committed
        stats["per_commit"].append(grouped / max(1, committer.batches - batches))
        return elapsed
    finally:
        engine.close()


def _tuned_gc(fn: Callable[[Path], float], path: Path) -> float:
    """``fn`` with the collector tuned as ``run_worker`` and the CLI worker tune it for their
    process (``loop.tuned_collector``): hundreds of instances in flight keep many objects
    alive, and default thresholds re-scan them often."""
    with tuned_collector():
        return fn(path)


def _run(fn: Callable[[Path], float]) -> float:
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        return float(fn(Path(tmp) / "bench.db"))


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    floors: list[float] = []
    floors_normal: list[float] = []
    engines: list[float] = []
    workers: list[float] = []
    tuned: list[float] = []
    stats: dict[str, list[float]] = {"per_commit": []}
    for _ in range(RUNS):  # interleaved, so a noisy moment hits every measure alike
        floors.append(_run(_floor_once))
        floors_normal.append(_run(partial(_floor_once, synchronous="NORMAL")))
        engines.append(_run(_engine_once))
        workers.append(_run(partial(_worker_once, stats=stats)))
        tuned.append(_run(partial(_tuned_gc, partial(_worker_once, stats={"per_commit": []}))))
    floor_s = statistics.median(floors)
    floor_normal_s = statistics.median(floors_normal)
    engine_s = statistics.median(engines)
    steps = INSTANCES * STEPS
    floor_us = floor_s / FLOOR_COMMITS * 1e6
    step_us = engine_s / steps * 1e6
    rows = [
        (
            "floor: raw sqlite3 commit (UPDATE + 2 INSERT)",
            FLOOR_COMMITS,
            "commits/s",
            floor_s,
            floor_us,
        ),
        (
            "floor, synchronous=NORMAL",
            FLOOR_COMMITS,
            "commits/s",
            floor_normal_s,
            floor_normal_s / FLOOR_COMMITS * 1e6,
        ),
        (f"statemachine: {INSTANCES} x {STEPS}-step execute", steps, "steps/s", engine_s, step_us),
        (
            f"statemachine: {INSTANCES} x {STEPS}-step started at once, one worker drains them",
            steps,
            "steps/s",
            statistics.median(workers),
            statistics.median(workers) / steps * 1e6,
        ),
        (
            f"the same, GC threshold {GC_THRESHOLD[0]:,} (as run_worker and the CLI worker set it)",
            steps,
            "steps/s",
            statistics.median(tuned),
            statistics.median(tuned) / steps * 1e6,
        ),
    ]
    print(
        f"SQLite file, WAL, synchronous=FULL unless noted; median of {RUNS} runs; "
        "ratio = µs each / µs per floor commit at FULL\n\n"
        "| measure | n | rate | µs each | ratio to floor |\n"
        "|---|---:|---:|---:|---:|"
    )
    for label, n, unit, seconds, us in rows:
        print(f"| {label} | {n} | {n / seconds:,.0f} {unit} | {us:,.1f} | {us / floor_us:.1f}x |")
    floor_rate = FLOOR_COMMITS / floor_s
    worker_rate = steps / statistics.median(workers)
    tuned_rate = steps / statistics.median(tuned)
    print(
        f"\nWith {INSTANCES} in flight: {statistics.median(stats['per_commit']):.1f} transitions "
        f"per commit (group commit); {worker_rate / floor_rate:.2f}x the floor's "
        f"one-commit-per-step rate ({tuned_rate / floor_rate:.2f}x with run_worker's GC threshold)."
    )


if __name__ == "__main__":
    main()
