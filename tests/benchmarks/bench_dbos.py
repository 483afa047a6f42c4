"""Cost of one durable step, side by side with DBOS Transact, against the floor of the database.

In one process, on SQLite files in WAL with ``synchronous=FULL``:

(a) floor: raw ``sqlite3`` transactions doing what one step transition does (UPDATE the
    instance row + INSERT a ~200-byte step row + INSERT a history row, ``BEGIN IMMEDIATE`` ...
    ``COMMIT``), committed one by one (``bench_steps._floor_once``);
(b) DBOS Transact (``pip install -e '.[bench]'``): a ``@DBOS.workflow()`` calling 10
    ``@DBOS.step()`` functions whose bodies return their input, 200 instances called one after
    another (each call runs the workflow to completion in the calling thread);
(c) statemachine: the same 10-step workflow with trivial handlers, 200 instances via
    ``engine.execute`` one after another (``bench_steps._engine_once``);
(d) both with 200 instances in flight at once: DBOS starts them with ``DBOS.start_workflow``
    (its own thread pool runs them) and the clock stops when every handle has its result;
    statemachine starts them with ``engine.start`` and one in-process worker
    (``concurrency=200``) drains them (``bench_steps._worker_once``), its commits grouped.

Each side gets one warm-up instance (schema, pools, threads) before the clock starts. Medians of
3 runs, interleaved, each on a fresh temporary directory; one markdown table: µs per step,
steps/s (commits/s for the floor), ratio to the floor, and steps/s ÷ DBOS steps/s.

How DBOS is configured. DBOS opens its SQLite system database (``system_database_url =
"sqlite:///<file>"``) with a SQLAlchemy engine of its own (``dbos/_sys_db_sqlite.py``): a
``connect`` listener sets ``isolation_level = "IMMEDIATE"`` (so pysqlite opens each write
transaction with ``BEGIN IMMEDIATE``), ``busy_timeout=30000`` and ``foreign_keys=ON``, and it
sets neither ``journal_mode`` nor ``synchronous``: left alone it runs in the rollback journal
(``journal_mode=DELETE``) at SQLite's compiled-in ``synchronous`` (FULL in the usual builds).
The engine is created inside ``DBOS.launch()``, so there is no engine to attach a listener to
beforehand; instead the config's ``db_engine_kwargs`` (merged over DBOS's defaults: pool of 20,
``pool_pre_ping``) pass ``connect_args={"factory": _PragmaConnection}``, which SQLAlchemy hands
to ``sqlite3.connect``: every connection DBOS opens is a ``sqlite3.Connection`` subclass that
runs ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=FULL`` as it opens (DBOS's own listener
still runs after it). The run checks that the factory was used and that the file is in WAL.
The factory also counts the write transactions DBOS commits, printed under the table.

DBOS is process-global (one ``DBOS`` instance, a registry of decorated functions). The
workflow and steps are decorated once per process; each run builds ``DBOS(config=...)``,
``DBOS.launch()``es it on its fresh file and ``DBOS.destroy()``s it (keeping the registry), which
runs cleanly many times in one process. Quiet and offline: logging is disabled, ``log_level`` is
``ERROR``, ``enable_otlp`` is off, no ``conductor_key`` is given (so no Conductor websocket) and
``DBOS__CLOUD`` is removed from the environment before ``import dbos`` (DBOS Cloud mode would
start Conductor and OTLP export). Nothing is fetched from the network.

Prints the table and writes nothing else (temporary databases are deleted). Without ``dbos``
installed it prints how to install it and returns.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.benchmarks import bench_steps

INSTANCES = bench_steps.INSTANCES
STEPS = bench_steps.STEPS
FLOOR_COMMITS = bench_steps.FLOOR_COMMITS
RUNS = 3
SYNCHRONOUS = "FULL"
_SYNCHRONOUS_CODE = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


class _PragmaConnection(sqlite3.Connection):
    """The ``sqlite3`` connection DBOS's engine opens: WAL and ``synchronous=SYNCHRONOUS``."""

    opened = 0
    commits = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        got = self.execute("PRAGMA synchronous").fetchone()[0]
        if got != _SYNCHRONOUS_CODE[SYNCHRONOUS]:
            raise RuntimeError(f"PRAGMA synchronous is {got} on a DBOS connection")
        _PragmaConnection.opened += 1

    def commit(self) -> None:
        if self.in_transaction:  # a commit with no open transaction writes nothing
            _PragmaConnection.commits += 1
        super().commit()


_workflow: Callable[[dict[str, int]], dict[str, int]] | None = None


def _dbos_workflow() -> Callable[[dict[str, int]], dict[str, int]]:
    """The 10-step DBOS workflow, decorated once per process (the DBOS registry is global)."""
    global _workflow
    if _workflow is None:
        from dbos import DBOS

        def make_step(i: int) -> Callable[[dict[str, int]], dict[str, int]]:
            def trivial(data: dict[str, int]) -> dict[str, int]:
                return data

            return DBOS.step(name=f"bench-step-{i}")(trivial)

        steps = [make_step(i) for i in range(STEPS)]

        @DBOS.workflow(name="bench")
        def bench(data: dict[str, int]) -> dict[str, int]:
            for step in steps:
                data = step(data)
            return data

        _workflow = bench
    return _workflow


def _config(path: Path) -> Any:
    """DBOS on a SQLite file, quiet and offline, its connections opened through the pragma factory."""
    from dbos import DBOSConfig

    config: DBOSConfig = {
        "name": "sm-bench",
        "system_database_url": f"sqlite:///{path}",
        "db_engine_kwargs": {"connect_args": {"factory": _PragmaConnection}},
        "log_level": "ERROR",
        "enable_otlp": False,
    }
    return config


def _dbos_once(path: Path) -> tuple[float, int]:
    """Seconds to run INSTANCES instances of the STEPS-step DBOS workflow, and commits made."""
    from dbos import DBOS

    bench = _dbos_workflow()
    _PragmaConnection.opened = 0
    DBOS(config=_config(path))
    try:
        DBOS.launch()
        bench({"n": -1})  # warm-up: schema, pools, threads
        _PragmaConnection.commits = 0
        start = time.perf_counter()
        for i in range(INSTANCES):
            if bench({"n": i}) != {"n": i}:
                raise RuntimeError("DBOS benchmark workflow returned the wrong output")
        seconds = time.perf_counter() - start
        commits = _PragmaConnection.commits
    finally:
        DBOS.destroy()
    if not _PragmaConnection.opened:
        raise RuntimeError("DBOS did not open its connections through the pragma factory")
    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if mode != "wal":
        raise RuntimeError(f"DBOS system database in journal_mode={mode}, not WAL")
    return seconds, commits


def _dbos_concurrent_once(path: Path) -> float:
    """Seconds for INSTANCES DBOS workflows started at once (``DBOS.start_workflow``) to end."""
    from dbos import DBOS

    bench = _dbos_workflow()
    DBOS(config=_config(path))
    try:
        DBOS.launch()
        bench({"n": -1})  # warm-up: schema, pools, threads
        start = time.perf_counter()
        handles = [DBOS.start_workflow(bench, {"n": i}) for i in range(INSTANCES)]
        for i, handle in enumerate(handles):
            if handle.get_result() != {"n": i}:
                raise RuntimeError("DBOS benchmark workflow returned the wrong output")
        return time.perf_counter() - start
    finally:
        DBOS.destroy()


def _in_tmp(fn: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        return fn(Path(tmp) / "bench.db")


def main() -> None:
    os.environ.pop("DBOS__CLOUD", None)  # read when dbos is imported
    try:
        import dbos  # noqa: F401
    except ImportError:
        print("dbos not installed: pip install -e '.[bench]'")
        return
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    floors: list[float] = []
    dboses: list[float] = []
    dbos_commits: list[int] = []
    engines: list[float] = []
    dbos_flight: list[float] = []
    engine_flight: list[float] = []
    for _ in range(RUNS):  # interleaved, so a noisy moment hits every side alike
        floors.append(_in_tmp(bench_steps._floor_once))
        seconds, commits = _in_tmp(_dbos_once)
        dboses.append(seconds)
        dbos_commits.append(commits)
        engines.append(_in_tmp(bench_steps._engine_once))
        dbos_flight.append(_in_tmp(_dbos_concurrent_once))
        engine_flight.append(
            _in_tmp(functools.partial(bench_steps._worker_once, stats={"per_commit": []}))
        )
    steps = INSTANCES * STEPS
    floor_us = statistics.median(floors) / FLOOR_COMMITS * 1e6
    dbos_us = statistics.median(dboses) / steps * 1e6
    engine_us = statistics.median(engines) / steps * 1e6
    dbos_flight_us = statistics.median(dbos_flight) / steps * 1e6
    engine_flight_us = statistics.median(engine_flight) / steps * 1e6
    rows = [
        ("floor: raw sqlite3 commit (UPDATE + 2 INSERT)", floor_us, "commits/s", "—"),
        (
            f"DBOS Transact: {INSTANCES} x {STEPS}-step workflow",
            dbos_us,
            "steps/s",
            "1.00x",
        ),
        (
            f"statemachine: {INSTANCES} x {STEPS}-step execute",
            engine_us,
            "steps/s",
            f"{dbos_us / engine_us:.2f}x",
        ),
        (
            f"DBOS Transact: {INSTANCES} started at once (start_workflow)",
            dbos_flight_us,
            "steps/s",
            "1.00x (in flight)",
        ),
        (
            f"statemachine: {INSTANCES} started at once, one worker drains them",
            engine_flight_us,
            "steps/s",
            f"{dbos_flight_us / engine_flight_us:.2f}x (vs DBOS in flight)",
        ),
    ]
    print(
        f"SQLite file, WAL, synchronous={SYNCHRONOUS}; one process; median of {RUNS} runs\n\n"
        "| measure | µs each | rate | ratio to floor | steps/s ÷ DBOS steps/s |\n"
        "|---|---:|---:|---:|---:|"
    )
    for label, us, unit, vs_dbos in rows:
        print(
            f"| {label} | {us:,.1f} | {1e6 / us:,.0f} {unit} | {us / floor_us:.1f}x | {vs_dbos} |"
        )
    per_step = statistics.median(dbos_commits) / steps
    print(
        f"\nDBOS committed {per_step:.2f} write transactions per step "
        f"(median of {RUNS} runs; workflow start and end included)."
    )


if __name__ == "__main__":
    main()
