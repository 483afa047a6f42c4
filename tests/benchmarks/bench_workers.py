"""Throughput of 1, 2 and 4 worker processes, against the raw commit rate of the same database.

For each backend (a SQLite file in WAL with ``synchronous=FULL``; Postgres when
``STATEMACHINE_TEST_PG`` is set, else reported as skipped) and each worker count:

(a) ``INSTANCES`` instances of a ``STEPS``-step sequential workflow with trivial handlers are
    started up front on a fresh database;
(b) the worker processes (``python -m tests.benchmarks.bench_workers worker URL CONCURRENCY``, each
    ``run_worker(concurrency=<the row's>, poll_interval="50ms")``) are started and wait until
    they are all ready; the clock starts when they are told to go, and stops when every
    instance is completed;
(c) the baseline, measured in the same run (median of ``RUNS``, like the rows): raw transactions of one connection, committed one
    by one, doing what a step transition does at the least (``sqlite3``: UPDATE + 2 INSERT in
    ``BEGIN IMMEDIATE``; ``psycopg`` in autocommit mode: UPDATE + INSERT in one transaction).

The rows: 1, 2 and 4 workers with ``concurrency=8`` each; then 200 instances in flight, as one
worker with ``concurrency=200`` and as two with 100 each (group commit within each process, and
the write lock handed between them). ``SM_BENCH_INSTANCES``, ``SM_BENCH_RUNS``,
``SM_BENCH_WORKERS`` (e.g. ``1,2``) and ``SM_BENCH_CONCURRENCY`` (per worker) change the defaults
(200, 3); given either of the last two, only their rows run.

Prints one markdown table: steps/s and, per row, the floor commits/s and the ratio
(floor commits/s / steps/s: how many raw commits one durable step costs in time).
Temporary databases are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from statemachine import Engine, workflow

INSTANCES = int(os.environ.get("SM_BENCH_INSTANCES", "200"))
RUNS = int(os.environ.get("SM_BENCH_RUNS", "3"))
STEPS = 10


def _configs() -> tuple[tuple[int, int], ...]:
    """(worker processes, concurrency of each) of every row."""
    workers, concurrency = (
        os.environ.get("SM_BENCH_WORKERS"),
        os.environ.get("SM_BENCH_CONCURRENCY"),
    )
    if workers or concurrency:
        per = int(concurrency or "8")
        return tuple((int(n), per) for n in (workers or "1,2,4").split(","))
    return ((1, 8), (2, 8), (4, 8), (1, 200), (2, 100))


CONFIGS = _configs()
FLOOR_COMMITS = 1500
PG_ENV = "STATEMACHINE_TEST_PG"
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = "bench-workers"


def definition() -> Any:
    builder = workflow(WORKFLOW)
    for i in range(STEPS):
        builder = builder.task(f"step-{i}", "bench_trivial")
    return builder.build()


def trivial(data: Any) -> Any:
    return data


def setup(engine: Engine) -> None:
    engine.action("bench_trivial")(trivial)
    engine.register(definition())


# -- the worker process ------------------------------------------------------------------------
def worker_main(url: str, concurrency: int) -> int:
    """Ready, wait for "go" on stdin, then work until SIGTERM."""
    logging.disable(logging.CRITICAL)
    engine = Engine(url)
    try:
        setup(engine)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        engine.run_worker(concurrency=concurrency, poll_interval="50ms")
    finally:
        engine.close()
    return 0


# -- floors ------------------------------------------------------------------------------------
def sqlite_floor(path: Path) -> float:
    """Raw sqlite3 commits per second: UPDATE + 2 INSERT per transaction, WAL, synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(
            """
            CREATE TABLE instance (id TEXT PRIMARY KEY, status TEXT, state TEXT,
                                   lease_epoch INTEGER NOT NULL DEFAULT 0, updated_at TEXT);
            CREATE TABLE step (id INTEGER PRIMARY KEY, instance_id TEXT, path TEXT,
                               status TEXT, output TEXT);
            CREATE TABLE history (id INTEGER PRIMARY KEY, instance_id TEXT, seq INTEGER,
                                  type TEXT, data TEXT);
            INSERT INTO instance VALUES ('i-1', 'running', '{}', 0, '');
            """
        )
        payload = json.dumps({"value": "x" * 150})
        start = time.perf_counter()
        for i in range(FLOOR_COMMITS):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE instance SET state = ?, updated_at = ? WHERE id = ? AND lease_epoch = 0",
                (payload, str(i), "i-1"),
            )
            conn.execute(
                "INSERT INTO step (instance_id, path, status, output) VALUES (?, ?, ?, ?)",
                ("i-1", f"step-{i}", "completed", payload),
            )
            conn.execute(
                "INSERT INTO history (instance_id, seq, type, data) VALUES (?, ?, ?, ?)",
                ("i-1", i, "workflow.step.completed", payload),
            )
            conn.execute("COMMIT")
        return FLOOR_COMMITS / (time.perf_counter() - start)
    finally:
        conn.close()


def postgres_floor(url: str) -> float:
    """Raw psycopg commits per second: autocommit connection, UPDATE + INSERT per transaction."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params: dict[str, Any] = {"dbname": u.database, "host": u.host, "port": u.port}
    params.update({"user": u.username} if u.username else {})
    params.update({"password": u.password} if u.password is not None else {})
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE floor_instance (id text PRIMARY KEY, state jsonb, "
            "lease_epoch integer NOT NULL DEFAULT 0, updated_at text)"
        )
        conn.execute(
            "CREATE TABLE floor_history (id bigserial PRIMARY KEY, instance_id text, "
            "seq integer, type text, data jsonb)"
        )
        conn.execute("INSERT INTO floor_instance VALUES ('i-1', '{}', 0, '')")
        payload = json.dumps({"value": "x" * 150})
        start = time.perf_counter()
        for i in range(FLOOR_COMMITS):
            with conn.transaction():
                conn.execute(
                    "UPDATE floor_instance SET state = %s, updated_at = %s "
                    "WHERE id = 'i-1' AND lease_epoch = 0",
                    (payload, str(i)),
                )
                conn.execute(
                    "INSERT INTO floor_history (instance_id, seq, type, data) "
                    "VALUES ('i-1', %s, 'workflow.step.completed', %s)",
                    (i, payload),
                )
        return FLOOR_COMMITS / (time.perf_counter() - start)


# -- one measurement ---------------------------------------------------------------------------
def _spawn_workers(url: str, n: int, concurrency: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.benchmarks.bench_workers", "worker", url, str(concurrency)]
    procs = [
        subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a benchmark worker failed to start")
    return procs


def _counts(engine: Engine) -> dict[str, int]:
    query = sa.text("SELECT status, count(*) FROM sm_instance GROUP BY status")
    with engine.repo.engine.connect() as conn:
        return {str(status): int(n) for status, n in conn.execute(query).all()}


def measure(url: str, workers: int, concurrency: int) -> float:
    """Steps per second of ``workers`` processes draining INSTANCES instances."""
    engine = Engine(url)
    procs: list[subprocess.Popen[str]] = []
    try:
        setup(engine)
        for i in range(INSTANCES):
            engine.start(WORKFLOW, {"n": i})
        procs = _spawn_workers(url, workers, concurrency)
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        deadline = time.monotonic() + 300
        while (counts := _counts(engine)).get("completed", 0) < INSTANCES:
            bad = {k: v for k, v in counts.items() if k in ("failed", "cancelled", "timed_out")}
            if bad or time.monotonic() > deadline:
                raise RuntimeError(f"benchmark instances did not all complete: {counts}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        return INSTANCES * STEPS / elapsed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        engine.close()


# -- backends ----------------------------------------------------------------------------------
@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sm-bench-workers-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def postgres_database() -> Iterator[str]:
    from tests import pg

    with pg.temporary_database(os.environ[PG_ENV]) as url:
        yield url


def run_backend(
    name: str, database: Callable[[], Any], floor: Callable[[], float]
) -> list[tuple[str, int, int, float, float]]:
    """Median of RUNS for each configuration; the floor is measured between them, alike."""
    floors: list[float] = []
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in CONFIGS}
    for _ in range(RUNS):  # interleaved, so a noisy moment hits every row alike
        floors.append(floor())
        for n, per in CONFIGS:
            with database() as url:
                rates[n, per].append(measure(url, n, per))
    commits = statistics.median(floors)
    return [(name, n, per, statistics.median(rates[n, per]), commits) for n, per in CONFIGS]


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")

    def sqlite_floor_once() -> float:
        with tempfile.TemporaryDirectory(prefix="sm-bench-floor-") as tmp:
            return sqlite_floor(Path(tmp) / "floor.db")

    def postgres_floor_once() -> float:
        with postgres_database() as url:
            return postgres_floor(url)

    rows = run_backend("SQLite (WAL, FULL)", sqlite_database, sqlite_floor_once)
    notes = []
    if os.environ.get(PG_ENV, "").strip():
        rows += run_backend("Postgres", postgres_database, postgres_floor_once)
    else:
        notes.append(f"Postgres: skipped ({PG_ENV} is not set)")
    print(
        f"{INSTANCES} instances x {STEPS} trivial steps, started up front; worker processes with "
        f"run_worker(concurrency=...); median of {RUNS} runs; {os.cpu_count()} CPUs; "
        "ratio = floor commits/s / steps/s\n\n"
        "| backend | workers x concurrency | steps/s | floor commits/s (1 connection) | ratio |\n"
        "|---|---:|---:|---:|---:|"
    )
    for backend, n, per, steps_s, commits_s in rows:
        print(
            f"| {backend} | {n} x {per} | {steps_s:,.0f} | {commits_s:,.0f} | "
            f"{commits_s / steps_s:.2f}x |"
        )
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2], int(sys.argv[3])))
    main()
