"""What a poll step's check returns, read strictly: ``{"done": bool, "result": ...}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from statemachine.vocabulary import ErrorInfo, error_info


def result(output: Any) -> tuple[bool, Any] | None:
    """``(done, result)`` of a poll check's ``{"done": bool, "result": ...}``; None for any
    other shape, which fails the step (``shape_error``) rather than being guessed at:
    ``{"status": "pending"}``, ``{"done": "false"}`` or ``"not yet"`` once read as done."""
    if isinstance(output, Mapping) and isinstance(output.get("done"), bool):
        return output["done"], output.get("result")
    return None


def shape_error(path: str, output: Any) -> ErrorInfo:
    shown = json.dumps(output)  # stored output: JSON already
    if len(shown) > 200:
        shown = shown[:200] + "..."
    message = (
        f"the check of poll {path!r} returned {shown}; it must return "
        '{"done": true or false, "result": ...}'
    )
    return error_info("InvalidPollResult", message)
