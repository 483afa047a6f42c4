"""Scale: wide parallel steps, big maps, big definitions, many sleeping instances.

All on a SQLite file (WAL, ``synchronous=FULL``, the engine's default), in this one process:

1. a ``BRANCHES``-branch parallel step (each branch one trivial sync task) run with
   ``engine.execute``: seconds, steps/s and the ratio to the raw-commit floor (the
   ``bench_steps`` floor: raw ``sqlite3`` UPDATE + 2 INSERT transactions, measured in the same
   run, interleaved with the engine runs);
2. a ``MAP_ITEMS``-item map (``max_concurrency=50``, one trivial task per item): seconds,
   items/s and the ratio to the floor; and one four times bigger, whose items cost as much
   only if what a map's commits rewrite does not grow with the items done;
   then one execute of a ``LONG_STEPS``-step sequential workflow and of a loop of
   ``LOOP_PASSES`` passes: µs per step (or pass), which stays that of a short workflow only if
   what every commit rewrites does not grow with the run;
3. loading and validating a ``DEF_STEPS``-step definition (sequential tasks, each with one
   ``${{ }}`` input template): from YAML text with ``load_yaml``, and the same via the builder;
   milliseconds, median of ``LOAD_RUNS``;
4. ``TIMERS`` instances of ``wait(duration="1h")`` then a trivial task, on a ``ManualClock``:
   resident memory (``VmRSS`` from ``/proc/self/status``) after starting them, after one
   ``run_due`` has put them all to sleep, and after the clock moves 1h and one ``run_due``
   completes them all (timed); plus the growth per 1,000 instances;
5. wake-up latency on the real clock: ``WAKE`` instances of ``wait(duration="2s")`` then a task
   that records ``time.time()``, run by ``engine.worker(concurrency=8, poll_interval="200ms")``;
   p50/p99 of (task start - (instance start + 2 s)), and of (task start - (wait step start +
   2 s)), the lateness of the timer itself;
6. whether ``dbos`` is importable (a comparison with it is not run here).

Sizes come from the environment (defaults in brackets): ``SM_BENCH_RUNS`` [3] runs of 1-2,
``SM_BENCH_BRANCHES`` [100], ``SM_BENCH_MAP_ITEMS`` [1000], ``SM_BENCH_LONG_STEPS`` [1000],
``SM_BENCH_LOOP_PASSES`` [2000], ``SM_BENCH_DEF_STEPS`` [1000],
``SM_BENCH_TIMERS`` [10000], ``SM_BENCH_WAKE`` [200]. Prints markdown tables; temporary
databases are deleted. These are measurements, never pass/fail limits.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from statemachine import Engine, branch, load_yaml, workflow
from statemachine.testing import ManualClock
from tests.benchmarks.bench_steps import FLOOR_COMMITS, _floor_once

RUNS = int(os.environ.get("SM_BENCH_RUNS", "3"))
BRANCHES = int(os.environ.get("SM_BENCH_BRANCHES", "100"))
MAP_ITEMS = int(os.environ.get("SM_BENCH_MAP_ITEMS", "1000"))
BIG_MAP_ITEMS = 4 * MAP_ITEMS
MAP_CONCURRENCY = 50
LONG_STEPS = int(os.environ.get("SM_BENCH_LONG_STEPS", "1000"))
LOOP_PASSES = int(os.environ.get("SM_BENCH_LOOP_PASSES", "2000"))
DEF_STEPS = int(os.environ.get("SM_BENCH_DEF_STEPS", "1000"))
LOAD_RUNS = 5
TIMERS = int(os.environ.get("SM_BENCH_TIMERS", "10000"))
WAKE = int(os.environ.get("SM_BENCH_WAKE", "200"))
WAKE_AFTER = 2.0
WAKE_POLL = "200ms"
WAKE_CONCURRENCY = 8


def trivial(data: Any) -> Any:
    return data


def _db_url(tmp: str) -> str:
    return f"sqlite:///{Path(tmp) / 'bench.db'}"


def _on_fresh_file(fn: Callable[[Path], float]) -> float:
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        return float(fn(Path(tmp) / "bench.db"))


def _rss_kib(field: str = "VmRSS") -> int:
    """Resident memory of this process in KiB, from /proc (falls back to getrusage's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


# -- 1 and 2: a wide parallel step and a big map -------------------------------------------------
def _parallel_once(path: Path) -> tuple[float, int]:
    """Seconds for one execute of a BRANCHES-branch parallel step, and the steps it recorded."""
    definition = (
        workflow("bench-parallel")
        .parallel(
            "fan-out",
            branches=[branch(f"b{i}").task("t", trivial).build() for i in range(BRANCHES)],
        )
        .build()
    )
    seconds, inst = _execute_once(path, definition, {"n": 1}, warm={"n": -1})
    return seconds, len(inst.step_results)


def _map_once(path: Path, items: int = MAP_ITEMS) -> float:
    """Seconds for one execute of an ``items``-item map (MAP_ITEMS; BIG_MAP_ITEMS shows
    whether an item costs more in a bigger map)."""
    definition = (
        workflow("bench-map")
        .map(
            "each",
            items="input.xs",
            iterator=branch("it").task("t", trivial).build(),
            max_concurrency=MAP_CONCURRENCY,
        )
        .build()
    )
    seconds, inst = _execute_once(path, definition, {"xs": list(range(items))}, warm={"xs": [0, 1]})
    if len(inst.output) != items:
        raise RuntimeError(f"map benchmark gave {len(inst.output)} results")
    return seconds


def _long_once(path: Path) -> float:
    """Seconds for one execute of a LONG_STEPS-step sequential workflow: a step costs as much
    at the end as at the start only if what each commit rewrites does not grow with the run."""
    builder = workflow("bench-long")
    for i in range(LONG_STEPS):
        builder = builder.task(f"s{i}", trivial)
    return _execute_once(path, builder.build(), {"n": 1})[0]


def _loop_once(path: Path) -> float:
    """Seconds for one execute of a loop of LOOP_PASSES passes over one task."""
    definition = (
        workflow("bench-loop")
        .task("inc", lambda data: {"i": data["i"] + 1})
        .loop("again", condition="inc.i < input.n", target="inc", max_iterations=LOOP_PASSES + 1)
        .build()
    )
    return _execute_once(path, definition, {"i": 0, "n": LOOP_PASSES})[0]


def _execute_once(path: Path, definition: Any, data: Any, warm: Any = None) -> tuple[float, Any]:
    """Seconds for one execute of ``definition`` with ``data`` on a fresh engine, and the
    instance, which must complete. A warm-up execute comes first (schema, loop thread, pools,
    plan): of ``definition`` with ``warm``, or of a one-step workflow when a run of the
    definition itself would cost as much as the measure."""
    engine = Engine(f"sqlite:///{path}")
    try:
        if warm is None:
            engine.register([definition, workflow("bench-warm").task("t", trivial).build()])
            engine.execute("bench-warm", {})
        else:
            engine.register(definition)
            engine.execute(definition.name, warm)
        start = time.perf_counter()
        inst = engine.execute(definition.name, data)
        seconds = time.perf_counter() - start
        if inst.status != "completed":
            raise RuntimeError(f"{definition.name} ended {inst.status}: {inst.error}")
        return seconds, inst
    finally:
        engine.close()


def bench_fan_out() -> None:
    floors: list[float] = []
    parallels: list[float] = []
    maps: list[float] = []
    big_maps: list[float] = []
    longs: list[float] = []
    loops: list[float] = []
    parallel_steps = 0
    for _ in range(RUNS):  # interleaved, so a noisy moment hits every row alike
        floors.append(_on_fresh_file(_floor_once))
        with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
            seconds, parallel_steps = _parallel_once(Path(tmp) / "bench.db")
        parallels.append(seconds)
        maps.append(_on_fresh_file(_map_once))
        big_maps.append(_on_fresh_file(partial(_map_once, items=BIG_MAP_ITEMS)))
        longs.append(_on_fresh_file(_long_once))
        loops.append(_on_fresh_file(_loop_once))
    floor_s = statistics.median(floors)
    floor_us = floor_s / FLOOR_COMMITS * 1e6
    parallel_s = statistics.median(parallels)
    map_s = statistics.median(maps)
    big_map_s = statistics.median(big_maps)
    rows = [
        (
            "floor: raw sqlite3 commit (UPDATE + 2 INSERT)",
            FLOOR_COMMITS,
            floor_s,
            f"{FLOOR_COMMITS / floor_s:,.0f} commits/s",
            floor_us,
        ),
        (
            f"parallel: {BRANCHES} branches x 1 task, one execute ({parallel_steps} step results)",
            BRANCHES,
            parallel_s,
            f"{BRANCHES / parallel_s:,.0f} steps/s",
            parallel_s / BRANCHES * 1e6,
        ),
        (
            f"map: {MAP_ITEMS} items x 1 task, max_concurrency={MAP_CONCURRENCY}, one execute",
            MAP_ITEMS,
            map_s,
            f"{MAP_ITEMS / map_s:,.0f} items/s",
            map_s / MAP_ITEMS * 1e6,
        ),
        (
            f"map: {BIG_MAP_ITEMS} items, the same",
            BIG_MAP_ITEMS,
            big_map_s,
            f"{BIG_MAP_ITEMS / big_map_s:,.0f} items/s",
            big_map_s / BIG_MAP_ITEMS * 1e6,
        ),
        (
            f"sequential: one {LONG_STEPS}-step workflow, one execute",
            LONG_STEPS,
            statistics.median(longs),
            f"{LONG_STEPS / statistics.median(longs):,.0f} steps/s",
            statistics.median(longs) / LONG_STEPS * 1e6,
        ),
        (
            f"loop: {LOOP_PASSES} passes over one task, one execute",
            LOOP_PASSES,
            statistics.median(loops),
            f"{LOOP_PASSES / statistics.median(loops):,.0f} passes/s",
            statistics.median(loops) / LOOP_PASSES * 1e6,
        ),
    ]
    print(
        f"### Fan-out in one step\n\nSQLite file, WAL, synchronous=FULL; median of {RUNS} runs "
        "(each on a fresh file, after a warm-up execute); ratio = µs per branch or item / "
        "µs per floor commit\n\n"
        "| measure | n | total s | rate | µs each | ratio to floor |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for label, n, seconds, rate, us in rows:
        print(f"| {label} | {n} | {seconds:.3f} | {rate} | {us:,.1f} | {us / floor_us:.1f}x |")


# -- 3: a big definition -----------------------------------------------------------------------
def _big_yaml() -> str:
    lines = ["id: bench-big", "version: 1", "steps:"]
    for i in range(DEF_STEPS):
        lines += [f"  - id: s{i}", "    action: noop", "    params:", "      n: ${{ input.n }}"]
    return "\n".join(lines) + "\n"


def _big_builder() -> Any:
    builder = workflow("bench-big", version="1")
    for i in range(DEF_STEPS):
        builder = builder.task(f"s{i}", "noop", input={"n": "${{ input.n }}"})
    return builder.build()


def bench_definitions() -> None:
    text = _big_yaml()
    yaml_ms: list[float] = []
    builder_ms: list[float] = []
    for _ in range(LOAD_RUNS):
        start = time.perf_counter()
        from_yaml = load_yaml(text)
        yaml_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        from_builder = _big_builder()
        builder_ms.append((time.perf_counter() - start) * 1e3)
    if len(from_yaml.steps) != DEF_STEPS or from_yaml.hash != from_builder.hash:
        raise RuntimeError("the YAML and builder definitions differ")
    print(
        f"### Load and validate a {DEF_STEPS:,}-step definition\n\n"
        f"Sequential tasks, each with one `${{{{ input.n }}}}` input template "
        f"({len(text) / 1024:,.0f} KiB of YAML); median of {LOAD_RUNS}; both give the same "
        "definition hash\n\n"
        "| how | median ms | min ms | µs per step |\n"
        "|---|---:|---:|---:|"
    )
    for label, ms in (
        ("`load_yaml(text)`", yaml_ms),
        ("builder: `workflow(...).task(...)` x N `.build()`", builder_ms),
    ):
        med = statistics.median(ms)
        print(f"| {label} | {med:,.1f} | {min(ms):,.1f} | {med / DEF_STEPS * 1e3:,.1f} |")


# -- 4: many sleeping instances ------------------------------------------------------------------
def _status_counts(path: Path) -> dict[str, int]:
    """Instances per status, read with a separate raw connection (no engine objects built)."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM sm_instance GROUP BY status"))
    finally:
        conn.close()


def bench_timers() -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        engine = Engine(f"sqlite:///{path}", clock=clock)
        try:
            engine.register(
                workflow("bench-sleep").wait("nap", duration="1h").task("t", trivial).build()
            )
            warm = engine.start("bench-sleep", {"i": -1})  # warm-up: every code path once
            engine.run_due()
            clock.advance("1h")
            engine.run_due()
            if engine.get(warm).status != "completed":
                raise RuntimeError("timer warm-up instance did not complete")
            gc.collect()
            rss_base = _rss_kib()

            start = time.perf_counter()
            for i in range(TIMERS):
                engine.start("bench-sleep", {"i": i})
            start_s = time.perf_counter() - start
            gc.collect()
            rss_pending = _rss_kib()

            start = time.perf_counter()
            engine.run_due()
            sleep_s = time.perf_counter() - start
            gc.collect()
            rss_waiting = _rss_kib()
            counts = _status_counts(path)
            if counts.get("waiting") != TIMERS:
                raise RuntimeError(f"expected {TIMERS} waiting instances, found {counts}")

            clock.advance("1h")
            start = time.perf_counter()
            engine.run_due()
            wake_s = time.perf_counter() - start
            gc.collect()
            rss_done = _rss_kib()
            peak = _rss_kib("VmHWM")
            counts = _status_counts(path)
            if counts.get("completed") != TIMERS + 1:
                raise RuntimeError(f"expected {TIMERS + 1} completed instances, found {counts}")
        finally:
            engine.close()

    per_k = 1000 / TIMERS
    rows = [
        ("engine ready (after a warm-up instance)", None, None, rss_base, None),
        (f"`start` x {TIMERS:,} (pending)", start_s, "starts/s", rss_pending, rss_base),
        ("`run_due()` once: all waiting on their 1h timer", sleep_s, "instances/s", rss_waiting, rss_pending),
        ("`clock.advance('1h')`; `run_due()` once: all completed", wake_s, "instances/s", rss_done, rss_waiting),
    ]  # fmt: skip
    print(
        f"### {TIMERS:,} instances waiting on timers\n\n"
        '`wait("nap", duration="1h")` then a trivial task; ManualClock; one process; RSS is '
        "VmRSS after `gc.collect()`, MiB\n\n"
        "| phase | seconds | rate | RSS MiB | Δ RSS MiB | Δ RSS per 1,000 instances |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for label, seconds, unit, rss, before in rows:
        secs = "" if seconds is None else f"{seconds:.2f}"
        rate = "" if seconds is None else f"{TIMERS / seconds:,.0f} {unit}"
        delta = "" if before is None else _mib(rss - before)
        per = "" if before is None else f"{(rss - before) * per_k:,.0f} KiB"
        print(f"| {label} | {secs} | {rate} | {_mib(rss)} | {delta} | {per} |")
    print(
        f"\nPeak RSS of the process (VmHWM): {_mib(peak)} MiB; growth from engine ready to all "
        f"completed: {(rss_done - rss_base) * per_k:,.0f} KiB per 1,000 instances."
    )


# -- 5: wake-up latency on the real clock --------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def bench_wake_latency() -> None:
    woke: dict[str, float] = {}
    lock = threading.Lock()

    def record(data: Any, ctx: Any) -> Any:
        now = time.time()
        with lock:
            woke[ctx.instance_id] = now
        return {"at": now}

    definition = (
        workflow("bench-wake").wait("nap", duration=WAKE_AFTER).task("record", record).build()
    )
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        engine = Engine(_db_url(tmp))
        try:
            engine.register(definition)
            started: dict[str, float] = {}
            with engine.worker(concurrency=WAKE_CONCURRENCY, poll_interval=WAKE_POLL):
                for i in range(WAKE):
                    t0 = time.time()
                    started[engine.start("bench-wake", {"i": i})] = t0
                deadline = time.monotonic() + WAKE_AFTER + 60
                while time.monotonic() < deadline:
                    with lock:
                        if len(woke) >= WAKE:
                            break
                    time.sleep(0.05)
            if len(woke) < WAKE:
                raise RuntimeError(f"only {len(woke)} of {WAKE} instances woke within 60 s")
            from_start: list[float] = []
            from_wait: list[float] = []
            for iid, t0 in started.items():
                inst = engine.get(iid)
                nap = inst.step_results["nap"].started_at
                from_start.append((woke[iid] - (t0 + WAKE_AFTER)) * 1e3)
                if nap is not None:
                    from_wait.append((woke[iid] - (nap.timestamp() + WAKE_AFTER)) * 1e3)
        finally:
            engine.close()
    print(
        f"### Wake-up latency, real clock\n\n{WAKE} instances started back to back while "
        f'`engine.worker(concurrency={WAKE_CONCURRENCY}, poll_interval="{WAKE_POLL}")` runs; '
        f'`wait(duration="{WAKE_AFTER:g}s")` then a task recording `time.time()`\n\n'
        "| lateness of the task's start | n | p50 ms | p99 ms | max ms | poll interval |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for label, values in (
        (f"vs. `engine.start` + {WAKE_AFTER:g} s", from_start),
        (f"vs. the wait step's recorded start + {WAKE_AFTER:g} s (timer lateness)", from_wait),
    ):
        if values:
            print(
                f"| {label} | {len(values)} | {_percentile(values, 50):,.0f} | "
                f"{_percentile(values, 99):,.0f} | {max(values):,.0f} | {WAKE_POLL} |"
            )


# -- 6: DBOS -------------------------------------------------------------------------------------
def report_dbos() -> None:
    if importlib.util.find_spec("dbos") is None:
        print("DBOS comparison skipped: pip install dbos")
    else:
        print("dbos is importable; no comparison with it is run by this benchmark")


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    sections: list[Callable[[], None]] = [
        bench_fan_out,
        bench_definitions,
        bench_timers,
        bench_wake_latency,
        report_dbos,
    ]
    for i, section in enumerate(sections):
        if i:
            print()
        section()


if __name__ == "__main__":
    main()
