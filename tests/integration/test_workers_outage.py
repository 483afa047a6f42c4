"""Workers outlive a database that goes away for a while, and say what happened by exit code.

* A Postgres restart (``pg_ctl restart -m fast`` of a throwaway cluster of the test's own: the
  shared server is never restarted) cuts every connection mid-run: ``statemachine worker``
  processes and the embedded worker of ``serve`` (``engine.worker()``) log the outage once,
  back off, and go on once it is back; every instance completes, each step recorded once.
* SQLite "database or disk is full" (the worker's files capped with ``RLIMIT_FSIZE``, the cap
  lifted later with ``prlimit``): the same.
* A database that cannot be reached at start-up: exit 3 after ``--connect-timeout``, one line.
"""

from __future__ import annotations

import gc
import resource
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from statemachine import Engine, load_yaml
from statemachine.engine import outage
from tests.integration.programs import worker_outage as wo
from tests.integration.programs.worker_support import Proc, run_counts, wait_until
from tests.pgcluster import throwaway_cluster

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="signals, rlimits, pg_ctl"),
    pytest.mark.slow,
]  # slow: run first (conftest)

DOWN = "database unavailable"
BACK = "database available again"


def _setup(url: str, tmp_path: Path, instances: int) -> tuple[Engine, Path, list[str]]:
    defs = tmp_path / "defs"
    defs.mkdir(exist_ok=True)
    (defs / "outage.yaml").write_text(wo.DEFINITION)
    engine = Engine(url)
    engine.register(load_yaml(defs / "outage.yaml"), check_actions=False)
    ids = [engine.start(wo.WORKFLOW, {}, instance_id=f"o-{n}") for n in range(instances)]
    return engine, defs, ids


def _worker(url: str, defs: Path, log: Path, tmp_path: Path, name: str, **env: str) -> Proc:
    argv = ["--db", url, "--definitions", str(defs), "--actions", wo.ACTIONS,
            "--concurrency", "4", "--poll-interval", "100ms", "--lease", "5s"]  # fmt: skip
    return Proc.program(
        "worker_outage", argv, tmp_path, name, env={"SM_OUTAGE_LOG": str(log), **env}
    )


def _start_riding(engine: Engine, iid: str) -> str:
    """The test's own call meets the cut connection first: it tries again (start is idempotent)."""
    start = lambda: engine.start(wo.WORKFLOW, {}, instance_id=iid)  # noqa: E731
    return outage.retry(start, outage.Outage(), "start", within=30)


def _completed(engine: Engine) -> int:
    return len(engine.store.list_instances(wo.WORKFLOW, "completed", 100_000, 0))


def _check_every_step_recorded_once(engine: Engine, ids: list[str], log: Path, most: int) -> None:
    """Nothing lost or recorded twice; a step ran again only if its run was cut by the outage
    (its result's commit failed with an unknown outcome, or a read of the run failed): at
    most ``most`` such re-runs, the runs in flight when the database went away."""
    for iid in ids:
        history = [(h.type, h.step) for h in engine.history(iid)]
        for step in wo.STEPS:
            assert history.count(("workflow.step.completed", step)) == 1, (iid, history)
        assert history.count(("workflow.completed", None)) == 1, (iid, history)
    runs = run_counts(log)
    assert set(runs) == {(iid, step) for iid in ids for step in wo.STEPS}
    assert sum(n - 1 for n in runs.values()) <= most, runs


def _stop(proc: Proc) -> None:
    proc.signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == 0, f"{proc.name} exited {rc} on SIGTERM\n{proc.describe()}"
    assert "Traceback" not in proc.stderr(), proc.describe()


@pytest.mark.postgres
def test_workers_ride_out_a_postgres_restart(tmp_path: Path) -> None:
    """Two ``statemachine worker`` processes and an embedded worker (what ``serve`` runs) on
    one cluster; it is restarted while they run. None of them ends; each logs the outage
    (one line as it starts, one as it ends: no traceback per poll) and all work completes."""
    log = tmp_path / "runs.log"
    with throwaway_cluster() as cluster:
        engine, defs, ids = _setup(cluster.url, tmp_path, 60)
        procs: list[Proc] = []
        try:
            engine.action("step")(wo.OutageActions().step)
            engine.register(load_yaml(defs / "outage.yaml"))
            procs = [_worker(cluster.url, defs, log, tmp_path, f"worker-{n}") for n in range(2)]
            for proc in procs:
                wait_until(f"{proc.name} ready", lambda p=proc: "workflows" in p.stderr(), 30)
            with pytest.MonkeyPatch.context() as mp, engine.worker(concurrency=4) as embedded:
                mp.setenv("SM_OUTAGE_LOG", str(log))
                wait_until("some progress", lambda: _completed(engine) >= 3, 60)
                assert _completed(engine) < len(ids), "all done before the restart"
                cluster.restart()
                time.sleep(1.0)
                assert not embedded.done(), embedded
                wait_until("every instance", lambda: _completed(engine) == len(ids), 90)
                assert not embedded.done(), embedded
            embedded.result()  # stopped cleanly as the block ended
            for proc in procs:
                assert proc.alive(), proc.describe()
                assert "Traceback" not in proc.stderr(), proc.describe()
                assert proc.stderr().count(DOWN) <= 2, proc.describe()  # one per outage seen
            assert any(DOWN in p.stderr() and BACK in p.stderr() for p in procs), [
                p.describe() for p in procs
            ]
            for proc in procs:
                _stop(proc)
            _check_every_step_recorded_once(engine, ids, log, most=3 * 4)
        finally:
            for proc in procs:
                proc.cleanup()
            engine.close()
            gc.collect()


def test_a_sqlite_worker_rides_out_a_full_disk(sqlite_url: str, tmp_path: Path) -> None:
    """The worker may write no file past 48 KiB: its WAL fills and every commit fails (EFBIG,
    as on a full disk). It logs that once, keeps retrying, and, once the cap is lifted
    (as if space were freed), finishes everything, each step recorded once."""
    log = tmp_path / "runs.log"
    engine, defs, ids = _setup(sqlite_url, tmp_path, 40)
    engine.close()
    proc = _worker(sqlite_url, defs, log, tmp_path, "worker", SM_FSIZE=str(48 * 1024))
    engine = Engine(sqlite_url)
    try:
        wait_until("the disk to fill", lambda: DOWN in proc.stderr() or not proc.alive(), 60)
        assert proc.alive(), proc.describe()
        # EFBIG: SQLite says "database or disk is full" or "disk I/O error", by where it wrote
        assert "full" in proc.stderr() or "I/O error" in proc.stderr(), proc.describe()
        stuck = _completed(engine)
        time.sleep(2.0)  # several retries, with backoff
        assert proc.alive(), proc.describe()
        assert _completed(engine) == stuck
        infinity = resource.RLIM_INFINITY
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (infinity, infinity))
        wait_until("every instance", lambda: _completed(engine) == len(ids), 60)
        assert BACK in proc.stderr(), proc.describe()
        assert proc.stderr().count(DOWN) == 1, proc.describe()
        _stop(proc)
        _check_every_step_recorded_once(engine, ids, log, most=4)
    finally:
        proc.cleanup()
        engine.close()
        gc.collect()


def test_a_worker_exits_3_when_the_database_cannot_be_reached_at_start(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing"
    args = [sys.executable, "-m", "statemachine", "worker", "--db", url, "--connect-timeout", "1s"]
    began = time.monotonic()
    proc = Proc(args, tmp_path, "worker")
    try:
        rc = proc.wait(timeout=30)
        assert rc == 3, proc.describe()
        assert time.monotonic() - began < 20
        assert "cannot reach the database" in proc.stderr(), proc.describe()
        assert "Traceback" not in proc.stderr(), proc.describe()
    finally:
        proc.cleanup()


@pytest.mark.postgres
def test_a_worker_whose_database_goes_away_as_it_registers_waits_for_it(tmp_path: Path) -> None:
    """The database stops after ``statemachine worker`` connected and before it registered its
    definitions (``GatedActions`` holds it there), and starts again a few seconds later: the
    worker waits for it as it waits to connect, registers, and runs the instance that is due;
    it neither exits nor needs a restart."""
    log = tmp_path / "runs.log"
    gate = tmp_path / "gate"
    gate.mkdir()
    with throwaway_cluster() as cluster:
        engine, defs, ids = _setup(cluster.url, tmp_path, 1)
        engine.close()
        argv = ["--db", cluster.url, "--definitions", str(defs), "--actions", wo.GATED,
                "--poll-interval", "100ms", "--connect-timeout", "60s"]  # fmt: skip
        env = {"SM_OUTAGE_LOG": str(log), "SM_GATE": str(gate)}
        proc = Proc.program("worker_outage", argv, tmp_path, "worker", env=env)
        try:
            arrived = lambda: (gate / "arrived").exists() or not proc.alive()  # noqa: E731
            wait_until("the worker connected and registering", arrived, 60)
            assert proc.alive(), proc.describe()
            cluster.stop()
            (gate / "go").touch()
            time.sleep(3.0)
            assert proc.alive(), proc.describe()  # waiting, not failed
            assert "workflows" not in proc.stderr(), proc.describe()  # nor running unregistered
            cluster.start()
            with Engine(cluster.url) as after:
                wait_until("the instance", lambda: _completed(after) == len(ids), 60)
            assert DOWN in proc.stderr() and "Traceback" not in proc.stderr(), proc.describe()
            _stop(proc)
        finally:
            proc.cleanup()
        gc.collect()


def test_a_worker_exits_1_when_its_store_breaks_for_good(tmp_path: Path) -> None:
    """Not an outage: the schema is gone ("no such table"). The worker does not wait for that
    to pass; it stops with exit 1 (a runtime error, never 2, which means bad usage)."""
    url = f"sqlite:///{tmp_path}/broken.db"
    log = tmp_path / "runs.log"
    engine, defs, _ = _setup(url, tmp_path, 0)
    engine.close()
    proc = _worker(url, defs, log, tmp_path, "worker")
    try:
        wait_until("ready", lambda: "workflows" in proc.stderr() or not proc.alive(), 30)
        with sqlite3.connect(tmp_path / "broken.db") as db:
            db.execute("DROP TABLE sm_instance")
        rc = proc.wait(timeout=30)
        assert rc == 1, proc.describe()
        assert "the worker stopped on an unexpected error" in proc.stderr(), proc.describe()
        assert "no such table" in proc.stderr(), proc.describe()
        assert DOWN not in proc.stderr(), proc.describe()
    finally:
        proc.cleanup()


@pytest.mark.postgres
def test_serve_rides_out_a_postgres_restart(tmp_path: Path) -> None:
    """``statemachine serve``'s embedded worker lives through the restart: /health still says
    its worker runs, and it finishes the instances started before and after."""
    httpx = pytest.importorskip("httpx")
    from tests.serving import free_port, wait_until_up

    log = tmp_path / "runs.log"
    with throwaway_cluster() as cluster:
        engine, defs, ids = _setup(cluster.url, tmp_path, 30)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "statemachine", "serve", "--db", cluster.url,
                "--definitions", str(defs), "--actions", wo.ACTIONS, "--port", str(port),
                "--concurrency", "4"]  # fmt: skip
        proc = Proc(args, tmp_path, "serve", env={"SM_OUTAGE_LOG": str(log)})
        try:
            wait_until_up(proc.popen, url, proc.err_path)
            wait_until("some progress", lambda: _completed(engine) >= 2, 60)
            cluster.restart()
            more = [_start_riding(engine, f"late-{n}") for n in range(5)]
            wait_until("every instance", lambda: _completed(engine) == len(ids) + 5, 90)
            health = httpx.get(f"{url}/health", timeout=10)
            assert health.json() == {"status": "ok", "worker": "running"}, proc.describe()
            assert "Traceback" not in proc.stderr(), proc.describe()
            assert "crashed" not in proc.stderr(), proc.describe()
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, proc.describe()
            _check_every_step_recorded_once(engine, ids + more, log, most=4)
        finally:
            proc.cleanup()
            engine.close()
            gc.collect()
