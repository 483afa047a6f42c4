"""Actions and a definition for the graceful-stop test of ``statemachine worker``.

The CLI loads ``tests.integration.programs.worker_signals:SignalActions``; each action appends
``{instance}/{step}/{pid}`` to the file named by ``$SM_SIGNALS_LOG``. ``slow`` takes
``SLOW_SECONDS`` (the test signals the worker while it runs); ``after`` takes ``AFTER_SECONDS``
(``$SM_SIGNALS_AFTER_SECONDS``): long, so a worker that starts it after being told to stop
cannot exit promptly. ``exits`` (workflow ``exits``) waits until ``slow`` has begun, then calls
``sys.exit(3)``: a handler's SystemExit stops the worker as SIGTERM does. ``long`` (workflow
``patient``) takes ``LONG_SECONDS``, longer than the lease the grace tests give the worker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from statemachine import StepContext
from tests.integration.programs.worker_support import append_line, read_lines

WORKFLOW = "signals"
SLOW_SECONDS = 1.5
DEFINITION = f"""\
id: {WORKFLOW}
version: 1
steps:
  - id: slow
    action: slow
  - id: after
    action: after
"""
EXIT_WORKFLOW = "exits"
EXIT_DEFINITION = f"""\
id: {EXIT_WORKFLOW}
version: 1
steps:
  - id: bye
    action: exits
"""

PATIENT_WORKFLOW = "patient"
LONG_SECONDS = 5.0
PATIENT_DEFINITION = f"""\
id: {PATIENT_WORKFLOW}
version: 1
steps:
  - id: long
    action: long
  - id: after
    action: after
"""


class SignalActions:
    def slow(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(os.environ["SM_SIGNALS_LOG"], f"{ctx.instance_id}/slow/{os.getpid()}")
        time.sleep(SLOW_SECONDS)
        return {"slow_by": os.getpid()}

    def after(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(os.environ["SM_SIGNALS_LOG"], f"{ctx.instance_id}/after/{os.getpid()}")
        time.sleep(float(os.environ.get("SM_SIGNALS_AFTER_SECONDS", "0")))
        return {"after_by": os.getpid()}

    def long(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        append_line(os.environ["SM_SIGNALS_LOG"], f"{ctx.instance_id}/long/{os.getpid()}")
        time.sleep(LONG_SECONDS)
        return {"long_by": os.getpid()}

    def exits(self, data: Any, ctx: StepContext) -> None:
        log = Path(os.environ["SM_SIGNALS_LOG"])
        deadline = time.monotonic() + 30
        while not any("/slow/" in ln for ln in read_lines(log)) and time.monotonic() < deadline:
            time.sleep(0.02)
        append_line(log, f"{ctx.instance_id}/bye/{os.getpid()}")
        sys.exit(3)
