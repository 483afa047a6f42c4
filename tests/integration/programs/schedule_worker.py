"""A worker process of the schedule tests: ``python schedule_worker.py DB_URL``.

Registers ``every-second`` (a tick each second, every missed tick caught up, runs may overlap)
and works until SIGTERM. Several of these on one database must start each tick exactly once.
"""

from __future__ import annotations

import sys

from statemachine import Engine, workflow

DEFINITION = (
    workflow("every-second")
    .schedule(every="1s", overlap="allow", catchup="all")
    .pass_("a", end=True)
    .build()
)

if __name__ == "__main__":
    with Engine(sys.argv[1]) as engine:
        engine.register(DEFINITION)
        engine.run_worker(concurrency=4, poll_interval="50ms", grace="5s")
