"""A process for the stopping tests (``tests/integration/test_engine_stopping.py``).

``worker DB LOG``: a worker (poll 100 ms, the default 30 s lease) for ``cancel-me``, whose async
``hold`` step logs ``started``, sleeps a minute, and logs ``cancelled`` when it is cancelled.
``deadline DB LOG``: executes ``deadline-restart`` (a workflow timeout of ``DEADLINE_SECONDS``,
a 1 s lease), whose sync ``slow`` step logs ``slow`` and sleeps a minute: the test kills the
process meanwhile. ``wait DB LOG``: executes ``deadline-wait`` (the same timeout), which waits
for the event ``go``, and exits. Each handler run appends one line to LOG.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import Engine, WorkflowDefinition, workflow
from tests.integration.programs.worker_support import append_line

CANCEL = "cancel-me"
DEADLINE = "deadline-restart"
DEADLINE_ID = "deadline-1"
DEADLINE_SECONDS = 3.0
WAIT = "deadline-wait"
WAIT_ID = "deadline-wait-1"


def definitions(log: Path | str) -> list[WorkflowDefinition]:
    async def hold(data: Any) -> str:
        append_line(log, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            append_line(log, "cancelled")
            raise
        return "never"

    def slow(data: Any) -> str:
        append_line(log, "slow")
        time.sleep(60)
        return "never"

    def after(data: Any) -> str:
        append_line(log, "after")
        return "after"

    return [
        workflow(CANCEL).task("hold", hold).task("after", after).build(),
        workflow(DEADLINE)
        .timeout(DEADLINE_SECONDS)
        .task("slow", slow)
        .task("after", after)
        .build(),
        workflow(WAIT)
        .timeout(DEADLINE_SECONDS)
        .wait("approve", event="go")
        .task("after", after)
        .build(),
    ]


def main(mode: str, db_url: str, log: str) -> None:
    if mode == "worker":
        engine = Engine(db_url)
        engine.register(definitions(log))
        engine.run_worker(concurrency=2, poll_interval="100ms")
    elif mode == "deadline":
        engine = Engine(db_url, lease="1s")
        engine.register(definitions(log))
        engine.execute(DEADLINE, {}, instance_id=DEADLINE_ID)  # killed before it returns
    elif mode == "wait":
        engine = Engine(db_url)
        engine.register(definitions(log))
        assert engine.execute(WAIT, {}, instance_id=WAIT_ID).status == "waiting"
    engine.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
