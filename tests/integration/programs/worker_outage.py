"""A ``statemachine worker`` for the outage tests: ``python worker_outage.py [worker options]``.

Runs the real CLI in this process after two preparations the test asks for through the
environment: ``SM_FSIZE`` (bytes) caps the size of every file this process may write
(``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored so a write past it fails with ``EFBIG``, which
SQLite reports as "database or disk is full"); the test lifts the cap later with ``prlimit``.
Handlers (``OutageActions.step``) append ``{instance}/{step}/{pid}`` to ``$SM_OUTAGE_LOG``.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import StepContext
from tests.integration.programs.worker_support import append_line

WORKFLOW = "outage"
STEPS = ("s1", "s2", "s3")
DEFINITION = f"id: {WORKFLOW}\nversion: 1\nsteps:\n" + "".join(
    f"  - id: {step}\n    action: step\n" for step in STEPS
)
ACTIONS = "tests.integration.programs.worker_outage:OutageActions"
GATED = "tests.integration.programs.worker_outage:GatedActions"


class OutageActions:
    def step(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(os.environ["SM_OUTAGE_LOG"], f"{ctx.instance_id}/{ctx.step_name}/{os.getpid()}")
        time.sleep(0.1)
        return {"pid": os.getpid()}


class GatedActions(OutageActions):
    """``OutageActions`` whose registration stops at a gate, after ``statemachine worker`` has
    connected and before it registers its definitions: registering the actions reads every
    public attribute, ``gate`` too, which touches ``$SM_GATE/arrived`` and waits for
    ``$SM_GATE/go``. The test stops the database in that window."""

    @property
    def gate(self) -> None:
        folder = Path(os.environ["SM_GATE"])
        (folder / "arrived").touch()
        while not (folder / "go").exists():
            time.sleep(0.05)


def main(argv: list[str]) -> None:
    cap = os.environ.get("SM_FSIZE")
    if cap:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(cap), hard))
    from statemachine import cli

    cli.main(["worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
