"""How a handler call ended, as the runner records it and watchers (metrics, tracing) see it.

Plain data below the engine, so that what watches handler calls need not import the engine that
makes them.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statemachine.definition import models
from statemachine.runtime import jsondata
from statemachine.runtime.context import StepContext


@dataclass
class Outcome:
    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = True


def error_dict(exc: BaseException, *, step: str | None = None) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)
    error = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "traceback": "".join(tb)[-4000:],
    }
    return jsondata.printable_error(error)  # a message may hold NUL: it is recorded all the same


# a watcher of handler calls: entered as a call begins (in its context: the handler sees what
# it sets there), told the outcome, left as the call ends (with the exception, if cancelled)
Watcher = Callable[
    [StepContext, models.RetryPolicy | None],
    contextlib.AbstractContextManager[Callable[[Outcome], None]],
]
