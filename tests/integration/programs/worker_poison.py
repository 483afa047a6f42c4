"""A supervised worker among whose instances one kills the process: ``python worker_poison.py
DB_URL LOG_FILE``.

Workflow ``chores``: step ``work`` sleeps ``data["seconds"]`` and returns, except for the
instance whose input says ``poison``: its handler ends the process with ``os._exit(1)`` a moment
after it starts (while its neighbours' steps are running). Every handler run appends
``{instance}/work/{pid}`` to LOG_FILE before it sleeps. The program runs a worker
(``concurrency=8``, lease 2 s, ``max_recoveries=2``) until SIGTERM; the test restarts it each
time it dies, as a supervisor would.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, StepContext, workflow
from statemachine.engine import EngineSettings
from tests.integration.programs.worker_support import append_line

WORKFLOW = "chores"
POISON = "chores-poison"
SETTINGS = EngineSettings(lease=2.0, max_recoveries=2)
CONCURRENCY = 8


def setup(engine: Engine, log: Path) -> None:
    def work(data: dict[str, Any], ctx: StepContext) -> Any:
        append_line(log, f"{ctx.instance_id}/work/{os.getpid()}")
        if data.get("poison"):
            time.sleep(0.3)
            os._exit(1)
        time.sleep(data["seconds"])
        return data["seconds"]

    engine.action("chores_work")(work)
    engine.register(workflow(WORKFLOW).task("work", "chores_work").build())


def main(argv: list[str]) -> int:
    url, log = argv[1], Path(argv[2])
    engine = Engine(url, settings=SETTINGS, worker_id=f"poison:{os.getpid()}")
    try:
        setup(engine, log)
        engine.run_worker(concurrency=CONCURRENCY, poll_interval="100ms")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
