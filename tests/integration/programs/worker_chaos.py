"""A worker the chaos test SIGKILLs at random: ``python worker_chaos.py DB_URL LOG_FILE``.

Runs a 5-step workflow (``chaos``) with ``run_worker(concurrency=4, poll_interval="100ms")`` and
a 2 s lease. Every handler appends ``{instance}/{step}/{pid}`` to LOG_FILE before it sleeps
20-50 ms, so a run cut short by SIGKILL is still counted. Workflow ``poison``'s one step kills
its worker (``os._exit``) every time, after appending the same line to ``poison_log(LOG_FILE)``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, StepContext, workflow
from statemachine.cli import engines
from tests.integration.programs.worker_support import append_line

WORKFLOW = "chaos"
STEPS = ("s1", "s2", "s3", "s4", "s5")
LEASE = "2s"
CONCURRENCY = 4
POISON = "poison"
POISON_EXIT = 70


def poison_log(log: Path) -> Path:
    return log.with_name(log.name + ".poison")


def setup(engine: Engine, log: Path) -> None:
    def chaos_step(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/{ctx.step_name}/{os.getpid()}")
        time.sleep(random.uniform(0.02, 0.05))
        return {"step": ctx.step_name, "pid": os.getpid()}

    def poison_step(data: Any, ctx: StepContext) -> None:
        append_line(poison_log(log), f"{ctx.instance_id}/{ctx.step_name}/{os.getpid()}")
        os._exit(POISON_EXIT)

    engine.action("chaos_step")(chaos_step)
    engine.action("poison_step")(poison_step)
    builder = workflow(WORKFLOW)
    for step in STEPS:
        builder = builder.task(step, "chaos_step")
    engine.register([builder.build(), workflow(POISON).task("drink", "poison_step").build()])


def main(argv: list[str]) -> int:
    url, log = argv[1], Path(argv[2])
    # as ``statemachine worker`` does: a replacement started while the database restarts, or
    # that connected just before it went down and so fails to register, waits for it
    engine = engines.connect(url, within=30.0, lease=LEASE, prepare=lambda e: setup(e, log))
    try:
        print(f"ready {engine.worker_id}", flush=True)
        engine.run_worker(concurrency=CONCURRENCY, poll_interval="100ms")
    finally:
        engine.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
