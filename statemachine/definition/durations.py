"""Durations as authors write them ("1h30m", 90, timedelta) turned into seconds, and back."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
MAX_SECONDS = 10 * 365 * 86400.0


class DurationSyntaxError(ValueError):
    """Raised for text that is not a duration; callers wrap it with the field's name."""


def parse_duration(value: object) -> float:
    """Return the duration in seconds; zero is allowed, negatives and junk are not."""
    if isinstance(value, bool):
        raise DurationSyntaxError(f"{value!r} is not a duration")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise DurationSyntaxError(
                f"{value!r} is not a duration; use a number of seconds or e.g. '250ms', '30s', "
                "'5m', '1h30m', '3d', '1w'"
            )
    else:
        raise DurationSyntaxError(f"{value!r} ({type(value).__name__}) is not a duration")
    if math.isnan(seconds) or seconds < 0:
        raise DurationSyntaxError(f"{value!r} is not a duration: it must not be negative")
    if seconds > MAX_SECONDS:
        raise DurationSyntaxError(f"{value!r} is longer than ten years")
    return seconds


def format_duration(seconds: float) -> str | float:
    """Compact text for whole milliseconds ("1h30m"); other values stay numbers."""
    ms = round(seconds * 1000)
    if abs(ms - seconds * 1000) > 1e-6:
        return seconds
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
