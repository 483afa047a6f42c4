"""The clock of simulations and tests: it only moves when told.

It lives in the simulation package, below ``statemachine.testing`` (which re-exports it), so
the simulator can read it without importing the module that exports the simulator.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from statemachine import errors
from statemachine.definition import durations

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that only moves when told: ``clock.advance("3d")`` then ``engine.run_due()``."""

    real = False

    def __init__(self, start: datetime | str | None = None) -> None:
        if start is None:
            start = datetime(2030, 1, 1, tzinfo=UTC)
        elif isinstance(start, str):
            start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        self._now = start if start.tzinfo else start.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, duration: Any) -> datetime:
        try:
            seconds = durations.parse_duration(duration)
        except durations.DurationSyntaxError as exc:
            raise errors.InputValidationError(f"advance: {exc}") from None
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when if when.tzinfo else when.replace(tzinfo=UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleeping on a manual clock moves it: in-process waits stay instant in tests."""
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
