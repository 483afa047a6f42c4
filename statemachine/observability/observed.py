"""What observability reads of an engine, as a protocol: it never imports the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from statemachine.runtime import events
from statemachine.runtime import plan as plans
from statemachine.runtime.outcome import Watcher
from statemachine.store import repository as repo


class Observed(Protocol):
    """An ``Engine``, as far as metrics and tracing see it."""

    bus: events.EventBus
    repo: repo.Repository

    @property
    def executor(self) -> Watched: ...


class Watched(Protocol):
    """The engine's executor: what it calls around each handler call."""

    def watch(self, watcher: Watcher, when: Callable[[], bool] | None = None) -> None: ...


def step_label(path: str) -> str:
    """A step's path as its definition names it: a map item's index left out, so that labels
    and span names stay few however many items run (``each/it@3/send`` -> ``each/it/send``)."""
    return plans.template_path(path)
