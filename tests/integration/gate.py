"""A handler that blocks until released, so a test can act while a step runs."""

from __future__ import annotations

import threading
from typing import Any


class Gate:
    """Blocks until released, so a test can act while a step runs."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, data: Any) -> str:
        self.entered.set()
        self.release.wait(timeout=30)
        return "gate"
