"""A worker process for the concurrency-key test: it runs ``keyed`` instances (at most one
running per ``input.key``) until none is left pending or running.

``hold`` appends ``{instance} {key} start|end {time}`` to ``argv[2]`` around a short sleep, so
the test can tell, across every process, whether two instances of one key ever overlapped.

Usage: worker_keys.py DB_URL LOG_PATH
"""

from __future__ import annotations

import sys
import time
from typing import Any

from statemachine import Engine, StepContext, workflow
from tests.integration.programs.worker_support import append_line

WORKFLOW = "keyed"
HOLD_SECONDS = 0.05
LEASE = "2s"  # a SIGKILLed worker's instances are taken over soon


def definition() -> Any:
    return workflow(WORKFLOW).concurrency(1, key="${{ input.key }}").task("hold", "hold").build()


def main() -> None:
    url, log = sys.argv[1], sys.argv[2]

    def hold(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id} {data['key']} start {time.time()}")
        time.sleep(HOLD_SECONDS)
        append_line(log, f"{ctx.instance_id} {data['key']} end {time.time()}")
        return {}

    engine = Engine(url, lease=LEASE)
    engine.action("hold")(hold)
    engine.register(definition())
    print("ready", flush=True)
    deadline = time.monotonic() + 240
    with engine.worker(concurrency=8, poll_interval="50ms"):
        while time.monotonic() < deadline:
            left = engine.list(WORKFLOW, status="pending", limit=1) + engine.list(
                WORKFLOW, "running", limit=1
            )
            if not left:
                break
            time.sleep(0.2)
    engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
