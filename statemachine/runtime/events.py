"""In-process subscribers for engine events; called after the commit that recorded the event."""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("statemachine.events")
Listener = Callable[[dict[str, Any]], Any]


class EventBus:
    def __init__(self) -> None:
        self._subs: list[tuple[str, Listener]] = []
        self._lock = threading.Lock()

    def on(self, pattern: str, callback: Listener) -> Callable[[], None]:
        """Subscribe; ``*`` and ``workflow.step.*`` patterns match like shell globs. Returns an unsubscribe."""
        entry = (pattern, callback)
        with self._lock:
            self._subs.append(entry)

        def off() -> None:
            with self._lock:
                if entry in self._subs:
                    self._subs.remove(entry)

        return off

    @property
    def listening(self) -> bool:
        """Whether anyone subscribed: with no one, events need not even be built."""
        return bool(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        name = str(event.get("type", ""))
        for pattern, callback in subs:
            if pattern == "*" or fnmatch.fnmatchcase(name, pattern):
                try:
                    callback(event)
                except Exception:  # a subscriber must never break the engine
                    _log.exception("event subscriber for %r failed", pattern)
