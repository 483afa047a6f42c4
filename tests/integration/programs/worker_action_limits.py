"""A worker process for the ``limit_action`` tests: it runs instances of ``throttled`` (one task
calling the action ``send``) until none is left, obeying the limit another process stored.

``send`` appends ``{instance} start|end {time}`` to ``argv[2]`` around a sleep of ``argv[3]``
seconds, so the test can tell how many calls started in any window, or ran at once, across
every process.

Usage: worker_action_limits.py DB_URL LOG_PATH HOLD_SECONDS
"""

from __future__ import annotations

import sys
import time
from typing import Any

from statemachine import Engine, StepContext, workflow
from tests.integration.programs.worker_support import append_line

WORKFLOW = "throttled"
UNFINISHED = ("pending", "running", "waiting")


def definition() -> Any:
    return workflow(WORKFLOW).task("call", "send").build()


def main() -> None:
    url, log, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def send(data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(log, f"{ctx.instance_id} start {time.time()}")
        if hold:
            time.sleep(hold)
            append_line(log, f"{ctx.instance_id} end {time.time()}")
        return {}

    engine = Engine(url)
    engine.action("send")(send)
    engine.register(definition())
    deadline = time.monotonic() + 150
    with engine.worker(concurrency=8, poll_interval="50ms"):
        while time.monotonic() < deadline:
            if not any(engine.list(WORKFLOW, status=s, limit=1) for s in UNFINISHED):
                break
            time.sleep(0.1)
    engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
