"""The worker of the migration test: ``python worker_migration.py DB_URL LOG_FILE FLAG_FILE``.

Runs ``run_worker`` with the actions of both versions of the ``migrating`` workflow. Version 1's
``slow`` step (action ``mig_old``) appends ``{instance}/old/{pid}`` to LOG_FILE, then waits for
FLAG_FILE to exist: the test migrates the instance meanwhile, then creates the flag, so the
handler's result comes back after the migration fenced its lease and must be refused. Version
2's actions (``mig_new``, ``mig_after``) append ``new`` and ``after`` lines. SIGTERM stops it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, StepContext, workflow
from tests.integration.programs.worker_support import append_line

WORKFLOW = "migrating"
LEASE = "2s"  # MIGRATION_LEASE overrides it


def version(n: int) -> Any:
    """Version 1: ``slow`` (mig_old); 2: ``slow`` (mig_new), then ``after``; 3: ``quick``."""
    if n == 1:
        return workflow(WORKFLOW, 1).task("slow", "mig_old").build()
    if n == 3:  # a version without the step: an instance running it is blocked
        return workflow(WORKFLOW, 3).task("quick", "mig_new").build()
    return workflow(WORKFLOW, 2).task("slow", "mig_new").task("after", "mig_after").build()


def setup(engine: Engine, log: Path, flag: Path) -> None:
    def old(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/old/{os.getpid()}")
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"by": "old"}

    def new(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/new/{os.getpid()}")
        return {"by": "new"}

    def after(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id}/after/{os.getpid()}")
        return {"slow": ctx.steps["slow"]}

    engine.action("mig_old")(old)
    engine.action("mig_new")(new)
    engine.action("mig_after")(after)
    engine.register(version(1))


def main(argv: list[str]) -> int:
    url, log, flag = argv[1], Path(argv[2]), Path(argv[3])
    engine = Engine(url, lease=os.environ.get("MIGRATION_LEASE", LEASE))
    try:
        setup(engine, log, flag)
        engine.run_worker(concurrency=2, poll_interval="100ms", grace="5s")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
