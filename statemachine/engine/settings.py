"""An engine's settings, and the one way its public calls read a duration."""

from __future__ import annotations

from dataclasses import dataclass

from statemachine import errors
from statemachine.definition import durations
from statemachine.vocabulary import Duration


@dataclass(frozen=True)
class EngineSettings:
    lease: float = 30.0  # seconds a claim lasts without a heartbeat
    inline_wait: float = 1.0  # timers this close are slept through in process (real clock only)
    max_recoveries: int = 5  # an instance that kills its worker this often is dead-lettered
    synchronous: str = "FULL"
    busy_timeout: float = 30.0  # SQLite: seconds a write waits for another's lock, then StoreError


def seconds(value: Duration, what: str) -> float:
    """A duration a caller passed, in seconds; a malformed one is the caller's error."""
    try:
        return durations.parse_duration(value)
    except durations.DurationSyntaxError as exc:
        raise errors.InputValidationError(f"{what}: {exc}") from None
