"""A worker whose instance kills it every time: ``python worker_deadletter.py DB_URL LOG_FILE``.

Workflow ``doomed``: step ``ok`` returns normally, step ``die`` appends
``{instance}/die/{pid}`` to LOG_FILE and then ends the process with ``os._exit(1)``. The program
calls ``run_due`` (lease 1 s, ``max_recoveries=2``) until ``doomed-1`` is terminal, then prints
one JSON line with its status and error and exits 0: that only happens once the instance is
dead-lettered instead of run again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, StepContext, workflow
from statemachine.engine import EngineSettings
from tests.integration.programs.worker_support import append_line

WORKFLOW = "doomed"
INSTANCE = "doomed-1"
SETTINGS = EngineSettings(lease=1.0, max_recoveries=2)


def setup(engine: Engine, log: Path) -> None:
    def ok(data: Any, ctx: StepContext) -> str:
        append_line(log, f"{ctx.instance_id}/ok/{os.getpid()}")
        return "fine"

    def die(data: Any, ctx: StepContext) -> str:
        append_line(log, f"{ctx.instance_id}/die/{os.getpid()}")
        os._exit(1)

    engine.action("doomed_ok")(ok)
    engine.action("doomed_die")(die)
    engine.register(workflow(WORKFLOW).task("ok", "doomed_ok").task("die", "doomed_die").build())


def main(argv: list[str]) -> int:
    url, log = argv[1], Path(argv[2])
    engine = Engine(url, settings=SETTINGS, worker_id=f"doomed:{os.getpid()}")
    try:
        setup(engine, log)
        deadline = time.monotonic() + 20  # the previous worker's lease must run out first
        while not engine.get(INSTANCE).is_terminal and time.monotonic() < deadline:
            engine.run_due()
            time.sleep(0.05)
        inst = engine.get(INSTANCE)
        print(json.dumps({"status": inst.status, "error": inst.error}), flush=True)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
