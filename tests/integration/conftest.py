"""Fixtures of the integration tests: an engine on a real database with a clock moved by hand."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from statemachine import Engine
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def _open(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    eng = Engine(db_url, clock=clock)
    yield eng
    eng.close()
    gc.collect()  # so a leaked resource shows up in the test that caused it


@pytest.fixture
def engine(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    """An Engine on ``db_url`` (SQLite and Postgres) whose timers read ``clock``."""
    yield from _open(db_url, clock)


@pytest.fixture
def timed(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    """The same, for files whose own ``engine`` fixture runs on the real clock."""
    yield from _open(db_url, clock)
