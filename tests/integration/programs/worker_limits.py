"""A worker process for the shared ``max_concurrent`` test: it registers the workflow *without*
a limit and runs instances until none is left to run; the limit it must obey is the one another
process stored.

``hold`` appends ``{instance} start|end {time}`` to ``argv[2]`` around a short sleep, so the
test can tell how many instances ran at once across every process.

Usage: worker_limits.py DB_URL LOG_PATH
"""

from __future__ import annotations

import sys
import time
from typing import Any

from statemachine import Engine, StepContext, workflow
from tests.integration.programs.worker_support import append_line

WORKFLOW = "limited"
HOLD_SECONDS = 0.3


def definition() -> Any:
    return workflow(WORKFLOW).task("hold", "hold").build()


def main() -> None:
    url, log = sys.argv[1], sys.argv[2]

    def hold(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id} start {time.time()}")
        time.sleep(HOLD_SECONDS)
        append_line(log, f"{ctx.instance_id} end {time.time()}")
        return {}

    engine = Engine(url)
    engine.action("hold")(hold)
    engine.register(definition())  # no max_concurrent here: the stored one holds
    deadline = time.monotonic() + 120
    with engine.worker(concurrency=8, poll_interval="50ms"):
        while time.monotonic() < deadline:
            left = engine.list(WORKFLOW, status="pending") + engine.list(WORKFLOW, "running")
            if not left:
                break
            time.sleep(0.1)
    engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
