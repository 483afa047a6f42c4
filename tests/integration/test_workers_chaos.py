"""Chaos: worker processes SIGKILLed at random while they run a few hundred instances.

Several ``programs/worker_chaos.py`` processes (lease 2 s, concurrency 4) share one database.
Every instance is started up front; then, for ``CHAOS_SECONDS`` (or until everything completed,
if sooner), the test SIGKILLs a random worker about every second and starts a replacement. The
survivors finish the rest. Afterwards:

* every instance is ``completed`` and each step was *recorded* exactly once in history;
* each step *ran* (log lines) at most ``1 + kills`` times, and the runs beyond the first add up
  to at most ``kills x concurrency``; more precisely, every run other than the recorded one (its
  pid is in the step's output) was made by a worker that was SIGKILLed: only a death may cause a
  re-run;
* no worker died on its own, none reported "database is locked", and the survivors stop cleanly
  (exit 0) on SIGTERM.

The instance counts are larger than a quick run needs so that work is still in flight while the
kills happen (200 instances finish in ~5 s without kills); all knobs are env-overridable.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from statemachine import Engine
from tests.integration.programs import worker_chaos as wc
from tests.integration.programs.worker_support import (
    LOCKED,
    Proc,
    run_counts,
    run_pids,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

CHAOS_SECONDS = float(os.environ.get("SM_CHAOS_SECONDS", "20"))
FINISH_TIMEOUT = float(os.environ.get("SM_CHAOS_FINISH_TIMEOUT", "40"))
INSTANCES = {
    "postgres": int(os.environ.get("SM_CHAOS_INSTANCES_PG", "650")),
    "sqlite": int(os.environ.get("SM_CHAOS_INSTANCES_SQLITE", "450")),
}
WORKERS = {"postgres": 3, "sqlite": 2}


def _backend(url: str) -> str:
    return "postgres" if url.startswith("postgres") else "sqlite"


# one query each (engine.list would also read every instance's steps): polled while workers run
def _completed(engine: Engine) -> int:
    return len(engine.repo.list_instances(wc.WORKFLOW, "completed", 100_000, 0))


def _failed(engine: Engine) -> list[str]:
    bad = engine.repo.list_instances(wc.WORKFLOW, "failed", 100_000, 0)
    return [f"{i.id}: {i.error}" for i in bad]


def test_sigkilled_workers_lose_nothing_and_record_every_step_once(
    db_url: str, tmp_path: Path
) -> None:
    backend = _backend(db_url)
    n_instances, n_workers = INSTANCES[backend], WORKERS[backend]
    log = tmp_path / "runs.log"
    rng = random.Random()
    engine = Engine(db_url)
    procs: list[Proc] = []
    live: list[Proc] = []
    kills = 0

    def spawn() -> Proc:
        proc = Proc.program("worker_chaos", [db_url, str(log)], tmp_path, f"worker-{len(procs)}")
        procs.append(proc)
        live.append(proc)
        return proc

    def report() -> str:
        return "\n".join(p.describe() for p in procs)

    try:
        wc.setup(engine, log)
        ids = [engine.start(wc.WORKFLOW, {"n": i}) for i in range(n_instances)]
        for _ in range(n_workers):
            spawn()

        # -- chaos: SIGKILL a random worker about every second, start a replacement ----------
        started = time.monotonic()
        chaos_end = started + CHAOS_SECONDS
        while time.monotonic() < chaos_end:
            time.sleep(rng.uniform(0.5, 1.3))
            died = [p for p in live if not p.alive()]
            assert not died, f"workers died on their own:\n{report()}"
            if _completed(engine) == n_instances:
                break  # nothing left to disturb
            victim = rng.choice(live)
            victim.sigkill()
            live.remove(victim)
            kills += 1
            spawn()
        assert kills >= 3, f"only {kills} kills happened: the work ended too soon to test much"

        # -- the survivors finish everything --------------------------------------------------
        deadline = time.monotonic() + FINISH_TIMEOUT
        while (done := _completed(engine)) < n_instances:
            failed = _failed(engine)
            assert not failed, f"instances failed: {failed[:5]}"
            died = [p for p in live if not p.alive()]
            assert not died, f"workers died on their own:\n{report()}"
            assert time.monotonic() < deadline, (
                f"only {done}/{n_instances} completed {FINISH_TIMEOUT}s after the chaos "
                f"({kills} kills)\n{report()}"
            )
            time.sleep(0.3)

        # -- survivors stop cleanly ------------------------------------------------------------
        for proc in live:  # a replacement started just before the end may still be importing
            wait_until(f"{proc.name} ready", lambda p=proc: "ready" in p.stdout(), timeout=30)
        for proc in live:
            proc.signal(signal.SIGTERM)
        for proc in live:
            rc = proc.wait(timeout=15)
            assert rc == 0, f"{proc.name} exited {rc} on SIGTERM\n{proc.describe()}"

        # -- nothing was lost or recorded twice ------------------------------------------------
        recorded: dict[tuple[str, str], int] = {}  # (instance, step) -> pid of the stored run
        for iid in ids:
            history = [(h.type, h.step) for h in engine.history(iid)]
            for step in wc.STEPS:
                assert history.count(("workflow.step.completed", step)) == 1, (iid, history)
            assert history.count(("workflow.completed", None)) == 1, (iid, history)
            inst = engine.get(iid)
            assert inst.status == "completed"
            for step in wc.STEPS:
                recorded[(iid, step)] = inst.step_results[step].output["pid"]

        # -- handlers re-ran only because a worker died -----------------------------------------
        runs = run_counts(log)
        expected = {(iid, step) for iid in ids for step in wc.STEPS}
        assert set(runs) == expected, "a step was recorded without its handler running"
        worst = max(runs.values())
        assert worst <= 1 + kills, (
            f"a step ran {worst} times with {kills} kills: "
            f"{[k for k, v in runs.items() if v == worst][:5]}"
        )
        over = sum(v - 1 for v in runs.values())
        assert over <= kills * wc.CONCURRENCY, (
            f"{over} re-runs for {kills} kills x concurrency {wc.CONCURRENCY}: "
            f"{Counter(runs.values())}"
        )
        # precisely: every run whose result was not the one stored was cut short by a SIGKILL
        killed = {p.pid for p in procs if p.killed}
        for key, pids in run_pids(log).items():
            assert recorded[key] in pids, (key, pids, recorded[key])
            lost = list(pids)
            lost.remove(recorded[key])
            assert set(lost) <= killed, f"{key}: runs by live workers were discarded: {pids}"

        print(
            f"{backend}: {n_instances} instances, {kills} kills, {over} re-runs, "
            f"worst step ran {worst}x, chaos {time.monotonic() - started:.1f}s in all"
        )
        for proc in procs:
            assert LOCKED not in proc.stderr(), proc.describe()
            assert "Traceback" not in proc.stderr(), proc.describe()
    finally:
        for proc in procs:
            proc.cleanup()
        engine.close()
        gc.collect()
