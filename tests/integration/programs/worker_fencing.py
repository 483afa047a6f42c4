"""Worker A of the fencing test: ``python worker_fencing.py MODE DB_URL LOG_FILE INSTANCE_ID``.

Runs instance INSTANCE_ID of the 2-step ``fenced`` workflow with ``engine.execute`` and a 1 s
lease. Step ``slow`` appends ``{instance}/slow/{pid}`` to LOG_FILE, then sleeps ``SLOW_SECONDS``:
the test SIGSTOPs this process right after the line appears, lets another engine take the
instance over and finish it, then SIGCONTs us. Our late result must then be refused.

MODE ``heartbeat``: the engine as shipped (the lease loss is noticed by the heartbeat that
precedes the commit). MODE ``commit``: heartbeats are disabled in this process, so the stale
result reaches the fenced commit itself (``WHERE lease_epoch = :mine``) and must be refused there.

On exit, prints one JSON line: what this process saw of the instance afterwards.

MODE ``worker``: no stopping; run ``run_worker(concurrency=2)`` (lease 1 s) with a ``slow`` step
of ``LONG_SECONDS``, longer than the lease: heartbeats must keep other workers off it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, StepContext, workflow
from tests.integration.programs.worker_support import append_line

WORKFLOW = "fenced"
SLOW_SECONDS = 2.0
LONG_SECONDS = 3.0
LEASE = "1s"


def setup(engine: Engine, log: Path, slow_seconds: float = SLOW_SECONDS) -> None:
    def slow(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/slow/{os.getpid()}")
        time.sleep(slow_seconds)
        return {"by": os.getpid()}

    def finish(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/finish/{os.getpid()}")
        return {"slow_by": ctx.steps["slow"]["by"], "finish_by": os.getpid()}

    engine.action("fence_slow")(slow)
    engine.action("fence_finish")(finish)
    engine.register(
        workflow(WORKFLOW).task("slow", "fence_slow").task("finish", "fence_finish").build()
    )


def main(argv: list[str]) -> int:
    mode, url, log, iid = argv[1], argv[2], Path(argv[3]), argv[4]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("statemachine.runner").setLevel(logging.INFO)  # "lease on X lost"
    if mode == "commit":
        from statemachine.engine import runner

        runner.InstanceRunner.heartbeat = lambda self, force=False: None  # type: ignore[method-assign]
    elif mode == "worker":
        engine = Engine(url, lease=LEASE)
        try:
            setup(engine, log, slow_seconds=LONG_SECONDS)
            engine.run_worker(concurrency=2, poll_interval="100ms")
        finally:
            engine.close()
        return 0
    elif mode != "heartbeat":
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    engine = Engine(url, lease=LEASE, worker_id=f"A:{os.getpid()}")
    try:
        setup(engine, log)
        inst = engine.execute(WORKFLOW, {}, instance_id=iid)
        print(json.dumps({"status": inst.status, "output": inst.output}), flush=True)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
