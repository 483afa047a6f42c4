"""Prometheus metrics (issue 21): counters that add up to the history, step durations, and an
instances gauge read from the database; from the engine, the server's ``GET /metrics`` (behind
its token) and ``statemachine worker --metrics-port`` (a real process scraped over HTTP)."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from statemachine import Engine, StatemachineError, load_definitions, observability
from statemachine.server import create_app
from tests.integration.programs import observed
from tests.serving import free_port

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = "tests.integration.programs.observed:ACTIONS"
TOKEN = "metrics-test-token"
# history entry types and the status each is counted under (API.md section 10)
STEP_ENTRIES = {
    "workflow.step.completed": "completed",
    "workflow.step.failed": "failed",
    "workflow.step.retry": "retry",
    "workflow.step.cancelled": "cancelled",
}
INSTANCE_ENDS = {
    "workflow.completed": "completed",
    "workflow.failed": "failed",
    "workflow.cancelled": "cancelled",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def series(found: Samples, name: str, *keys: str) -> Counter[tuple[str, ...]]:
    """One metric's non-zero samples, by the values of ``keys``."""
    picked: Counter[tuple[str, ...]] = Counter()
    for (sample, labels), value in found.items():
        if sample == name and value:
            by = dict(labels)
            picked[tuple(by[k] for k in keys)] = int(value)
    return picked


def history_counts(engine: Engine) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """(steps by workflow, step, status; instance ends by workflow, status), from the history."""
    steps: Counter[tuple[str, ...]] = Counter()
    ends: Counter[tuple[str, ...]] = Counter()
    for inst in engine.list():
        for entry in engine.history(inst.id):
            if entry.type in STEP_ENTRIES:
                assert entry.step is not None
                steps[(inst.workflow_name, entry.step, STEP_ENTRIES[entry.type])] += 1
            elif entry.type in INSTANCE_ENDS:
                ends[(inst.workflow_name, INSTANCE_ENDS[entry.type])] += 1
    return steps, ends


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(db_url)
    for name, fn in observed.ACTIONS.items():
        eng.action(name)(fn)
    eng.register(load_definitions(observed.write_definitions(tmp_path / "definitions")))
    yield eng
    eng.close()
    gc.collect()


def test_counters_add_up_to_the_history_and_the_gauge_reads_the_database(
    engine: Engine, db_url: str
) -> None:
    metrics = observability.metrics_for(engine)
    assert observability.metrics_for(engine) is metrics  # one registry per engine, counted once
    for _ in range(2):
        assert engine.execute("observed").status == "completed"
    assert engine.execute("doomed").status == "failed"
    waiting = engine.start("gated")
    engine.run_due()
    engine.cancel(waiting)
    with Engine(db_url) as other:  # another process, as far as counters go
        other.register(engine.definitions(), check_actions=False)
        other.start("gated")

    found = samples(metrics.render().decode())
    steps, ends = history_counts(engine)
    assert steps[("observed", "shaky", "retry")] == 2
    assert steps[("doomed", "broken", "retry")] == steps[("doomed", "broken", "failed")] == 1
    assert steps[("gated", "gate", "cancelled")] == 1
    assert series(found, "statemachine_steps_total", "workflow", "step", "status") == steps
    instances = series(found, "statemachine_instances_total", "workflow", "status")
    assert ends == {
        ("observed", "completed"): 2,
        ("doomed", "failed"): 1,
        ("gated", "cancelled"): 1,
    }
    # started by this process: the other engine's start is not counted here
    assert instances == ends + Counter(
        {
            ("observed", "started"): 2,
            ("doomed", "started"): 1,
            ("gated", "started"): 1,
        }
    )
    # a duration per attempt: the retried step ran twice per instance
    durations = series(found, "statemachine_step_duration_seconds_count", "workflow", "step")
    assert durations == {
        ("observed", "first"): 2,
        ("observed", "shaky"): 4,
        ("observed", "last"): 2,
        ("doomed", "broken"): 2,
        ("gated", "first"): 1,
    }
    # the gauge is the database's, the other engine's instance included
    gauge = series(found, "statemachine_instances", "status")
    assert gauge == {("completed",): 2, ("failed",): 1, ("cancelled",): 1, ("pending",): 1}


def test_each_engine_counts_in_its_own_registry(engine: Engine, tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'other.db'}") as other:
        other.register(engine.definitions(), check_actions=False)
        first, second = observability.metrics_for(engine), observability.metrics_for(other)
        assert first.registry is not second.registry
        engine.start("gated")
        other.start("gated")
        other.start("gated")
        assert started(first) == {("gated", "started"): 1}
        assert started(second) == {("gated", "started"): 2}


def started(metrics: Any) -> Counter[tuple[str, ...]]:
    found = samples(metrics.render().decode())
    return series(found, "statemachine_instances_total", "workflow", "status")
