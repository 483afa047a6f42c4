"""Flow control: what claiming costs when instances have concurrency keys.

``INSTANCES`` due instances of a one-task workflow (a trivial sync task) are started up front,
once with ``concurrency(1, key="${{ input.key }}")`` over ``KEYS`` key values, once without:

1. claim: ``claim_due`` in batches of ``BATCH`` until every instance is leased, each keyed one
   taking its key's slot as it is claimed (a limit of ``INSTANCES / KEYS`` here, so that every
   one can): instances claimed per second;
2. run: one in-process ``engine.worker(concurrency=8)`` until every instance completes (the
   keyed ones take their key's slot, at most one running per key): instances per second.

On a SQLite file (WAL, ``synchronous=FULL``) and on Postgres when ``STATEMACHINE_TEST_PG`` is
set. Sizes: ``SM_BENCH_FLOW_INSTANCES`` [1000], ``SM_BENCH_FLOW_KEYS`` [100],
``SM_BENCH_RUNS`` [3] (the median). Ratio = without keys / with keys (how many times slower
keys make it). These are measurements, never pass/fail limits.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from statemachine import Engine, workflow
from tests.benchmarks.bench_workers import PG_ENV, postgres_database, sqlite_database

INSTANCES = int(os.environ.get("SM_BENCH_FLOW_INSTANCES", "1000"))
KEYS = int(os.environ.get("SM_BENCH_FLOW_KEYS", "100"))
RUNS = int(os.environ.get("SM_BENCH_RUNS", "3"))
BATCH = 50


def _definition(limit: int | None) -> Any:
    builder = workflow("bench-flow")
    if limit is not None:
        builder = builder.concurrency(limit, key="${{ input.key }}")
    return builder.task("t", "trivial").build()


def _engine(url: str, limit: int | None) -> Engine:
    engine = Engine(url)
    engine.action("trivial")(lambda data: data)
    engine.register(_definition(limit))
    for n in range(INSTANCES):
        engine.start("bench-flow", {"key": f"k{n % KEYS}"})
    if engine.repo.dialect == "postgresql":  # statistics, as autovacuum keeps on a live table
        with engine.repo.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE sm_instance")
    return engine


def claim_rate(url: str, keyed: bool) -> float:
    """Instances leased per second by ``claim_due`` in batches, every one due; keyed, each
    takes its key's slot as it is claimed (the limit leaves room for all of them)."""
    engine = _engine(url, INSTANCES // KEYS if keyed else None)
    try:
        claimed, began = 0, time.perf_counter()
        while claimed < INSTANCES:
            now = engine.clock.now()
            got = engine.repo.claim_due("bench", now, now + timedelta(minutes=5), BATCH)
            if not got:
                raise RuntimeError(f"claimed {claimed} of {INSTANCES}")
            claimed += len(got)
        return INSTANCES / (time.perf_counter() - began)
    finally:
        engine.close()


def run_rate(url: str, keyed: bool) -> float:
    """Instances completed per second by one in-process worker; keyed, one running per key."""
    engine = _engine(url, 1 if keyed else None)
    try:
        began = time.perf_counter()
        with engine.worker(concurrency=8, poll_interval="20ms"):
            while len(engine.list("bench-flow", "completed", limit=INSTANCES)) < INSTANCES:
                time.sleep(0.05)
        return INSTANCES / (time.perf_counter() - began)
    finally:
        engine.close()


def _median(database: Callable[[], Any], measure: Callable[[str, bool], float]) -> list[float]:
    """Median rate without and with keys, interleaved so a noisy moment hits both alike."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(RUNS):
        for keyed in (False, True):
            with database() as url:
                rates[keyed].append(measure(url, keyed))
    return [statistics.median(rates[False]), statistics.median(rates[True])]


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    backends: list[tuple[str, Callable[[], Any]]] = [("SQLite (WAL, FULL)", sqlite_database)]
    if os.environ.get(PG_ENV, "").strip():
        backends.append(("Postgres", postgres_database))
    print(
        f"{INSTANCES} due instances of a one-task workflow; keyed: concurrency(limit) over {KEYS} "
        f"key values (claim: limit {INSTANCES // KEYS}, run: limit 1); claim: claim_due in batches of {BATCH}; run: one worker(concurrency=8); "
        f"median of {RUNS} runs; {os.cpu_count()} CPUs; ratio = without keys / with keys\n\n"
        "| backend | measure | without keys /s | with keys /s | ratio |\n"
        "|---|---|---:|---:|---:|"
    )
    for name, database in backends:
        for label, measure in (("claim", claim_rate), ("run", run_rate)):
            plain, keyed = _median(database, measure)
            print(f"| {name} | {label} | {plain:,.0f} | {keyed:,.0f} | {plain / keyed:.2f}x |")
    if len(backends) == 1:
        print(f"\nPostgres: skipped ({PG_ENV} is not set)")
