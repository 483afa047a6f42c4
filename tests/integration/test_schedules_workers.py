"""Worker processes on one database fire a schedule together: every tick starts exactly one
instance (none lost, none twice), whichever process claims it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from statemachine import Engine

pytestmark = pytest.mark.slow  # worker processes: run first (conftest)

PROGRAM = Path(__file__).parent / "programs" / "schedule_worker.py"
ROOT = Path(__file__).resolve().parents[2]


def test_worker_processes_start_every_tick_once(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Engine(db_url):
        pass  # the schema exists before the workers race to create it
    workers = [
        subprocess.Popen([sys.executable, str(PROGRAM), db_url], env=env, cwd=ROOT)
        for _ in range(2)
    ]
    try:  # until a few ticks fired (the workers start slowly on a loaded machine)
        with Engine(db_url) as watcher:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if len(watcher.list(workflow="every-second", limit=10)) >= 5:
                    break
                time.sleep(0.2)
        time.sleep(1)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            assert proc.wait(timeout=60) == 0
    with Engine(db_url) as engine:
        found = engine.list(workflow="every-second", limit=1000)
        ticks = sorted(datetime.fromisoformat(i.id.split("@")[1]) for i in found)
        assert len(ticks) >= 5
        # consecutive seconds from the first to the last: no tick lost, none started twice
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
        for inst in found:
            starts = [h for h in engine.history(inst.id) if h.type == "workflow.started"]
            assert len(starts) == 1, inst.id
        (info,) = engine.schedules()
        assert info.last_at == ticks[-1]
