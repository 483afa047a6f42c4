"""Turning pydantic's and our own findings into ``Issue`` lists with YAML-style locations."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from statemachine import errors

Loc = tuple[str | int, ...]

# model field -> YAML key, so locations read as the author wrote them
_YAML_KEYS = {
    "name": "id",
    "depends_on": "dependsOn",
    "error_next": "errorBranch",
    "on_error": "onError",
    "delay": "wait",
    "handler": "action",
    "input_schema": "inputSchema",
    "output_schema": "outputSchema",
    "max_attempts": "maxAttempts",
    "backoff_rate": "backoffRate",
    "max_interval": "maxInterval",
    "retry_on": "retryOn",
    "max_iterations": "maxIterations",
    "max_concurrency": "maxConcurrency",
    "default_retry": "defaultRetry",
    "on_complete": "onComplete",
}


def yaml_key(field: str) -> str:
    return _YAML_KEYS.get(field, field)


def format_loc(loc: Loc) -> str:
    """``("steps", 2, "dependsOn", 0)`` -> ``"steps[2].dependsOn[0]"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_PART = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


def parse_loc(text: str) -> Loc:
    """The inverse of ``format_loc``: ``steps[2].dependsOn[0]`` -> ("steps", 2, "dependsOn", 0)."""
    return tuple(int(index) if index else key for index, key in _PART.findall(text))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(str(c) for c in candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def from_validation_error(exc: ValidationError, base: Loc = ()) -> list[errors.Issue]:
    found: list[errors.Issue] = []
    step_tags = {"task", "choice", "parallel", "pass", "poll", "loop", "wait", "map", "subworkflow"}
    for err in exc.errors():
        loc: list[str | int] = list(base)
        raw: Sequence[int | str] = err["loc"]
        for i, part in enumerate(raw):
            # discriminated unions put the tag in the location; authors never wrote it
            if (
                isinstance(part, str)
                and part in step_tags
                and i > 0
                and isinstance(raw[i - 1], int)
            ):
                continue
            loc.append(yaml_key(part) if isinstance(part, str) else part)
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        if err["type"] == "literal_error":  # an enum value: say what it may be, and the nearest
            allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            hint = did_you_mean(str(err["input"]), allowed)
            message = f"{err['input']!r} is not one of {', '.join(allowed)}{hint}"
        found.append(
            errors.Issue(message=message, location=format_loc(tuple(loc)), code=err["type"])
        )
    return found
