"""Prometheus metrics (issue 21): counters that add up to the history, step durations, and an
instances gauge read from the database; from the engine, the server's ``GET /metrics`` (behind
its token) and ``statemachine worker --metrics-port`` (a real process scraped over HTTP)."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
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

from statemachine import (
    Engine,
    StatemachineError,
    branch,
    load_definitions,
    observability,
    workflow,
)
from statemachine.server import create_app
from tests.integration.programs import observed
from tests.integration.programs.worker_support import cli_worker
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


def test_a_map_items_steps_are_counted_under_the_step_the_definition_names(
    engine: Engine,
) -> None:
    """One series per step of the definition, however many items run: an item's index in its
    path (``each/one@7/t``) would make a new series per item."""
    metrics = observability.metrics_for(engine)
    engine.register(
        workflow("mapped")
        .map("each", items="input.items", iterator=branch("one").task("t", "ok").build())
        .build()
    )
    assert engine.execute("mapped", {"items": list(range(5))}).status == "completed"
    found = samples(metrics.render().decode())
    stored = {e.step for e in engine.history(engine.list("mapped")[0].id) if e.step}
    assert "each/one@4/t" in stored  # the history keeps the item's path
    counted = series(found, "statemachine_steps_total", "workflow", "step", "status")
    assert counted[("mapped", "each/one/t", "completed")] == 5
    assert not any("@" in step for _, step, _ in counted)
    durations = series(found, "statemachine_step_duration_seconds_count", "workflow", "step")
    assert durations == {("mapped", "each/one/t"): 5}


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


# -- the server's /metrics -------------------------------------------------------------------


def scrape(client: TestClient, **headers: str) -> Samples:
    res = client.get("/metrics", headers=headers)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/plain")
    return samples(res.text)


def test_the_server_serves_metrics_behind_its_token(engine: Engine) -> None:
    client = TestClient(create_app(engine, TOKEN), base_url="http://localhost")
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = client.post(
        "/api/workflows/gated/instances", json={}, headers={**auth, "Origin": "http://localhost"}
    )
    assert started.status_code == 201, started.text
    found = scrape(client, **auth)
    assert series(found, "statemachine_instances_total", "workflow", "status") == {
        ("gated", "started"): 1
    }
    assert series(found, "statemachine_instances", "status") == {("pending",): 1}
    # a name the server was not told to answer for is refused, as on the API
    assert client.get("/metrics", headers={**auth, "Host": "evil.example"}).status_code == 400
    # not in the OpenAPI schema (it is not JSON), but said in its description
    schema = client.get("/openapi.json").json()
    assert "/metrics" not in schema["paths"] and "/metrics" in schema["info"]["description"]


def test_without_a_token_metrics_are_open_like_the_api(engine: Engine) -> None:
    assert engine.execute("observed").status == "completed"
    client = TestClient(create_app(engine), base_url="http://localhost")
    found = scrape(client)
    counted = series(found, "statemachine_steps_total", "workflow", "step", "status")
    # counting began as the app was made: what ran before is not counted
    assert counted == {}
    assert engine.execute("observed").status == "completed"
    counted = series(scrape(client), "statemachine_steps_total", "workflow", "step", "status")
    assert counted[("observed", "shaky", "retry")] == 1


# -- without prometheus_client ---------------------------------------------------------------


@pytest.fixture
def no_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """``prometheus_client`` as if not installed: importing it fails, as it would."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "statemachine.observability.metrics", raising=False)


@pytest.mark.usefixtures("no_prometheus")
def test_asking_for_metrics_without_prometheus_client_names_the_extra(engine: Engine) -> None:
    with pytest.raises(StatemachineError, match=r"durable-statemachine\[metrics\]"):
        observability.metrics_for(engine)
    client = TestClient(create_app(engine), base_url="http://localhost")
    res = client.get("/metrics")
    assert (
        res.status_code == 501 and "durable-statemachine[metrics]" in res.json()["error"]["message"]
    )
    assert client.get("/health").status_code == 200  # the rest of the server works
    assert engine.execute("observed").status == "completed"


BLOCKED = (
    "import sys; sys.modules['prometheus_client'] = None; sys.modules['opentelemetry'] = None; "
)


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCKED + code],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_core_runs_without_the_extras(tmp_path: Path) -> None:
    code = (
        "from statemachine import Engine, workflow\n"
        "engine = Engine('sqlite:///core.db')\n"
        "engine.action('ok')(lambda data: 1)\n"
        "engine.register([workflow('w').task('a', 'ok').build()])\n"
        "print(engine.execute('w').status)\n"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed"


def test_worker_metrics_port_without_prometheus_client_is_a_usage_error(
    tmp_path: Path,
) -> None:
    defs = observed.write_definitions(tmp_path / "definitions")
    argv = ["worker", "--db", "sqlite:///w.db", "--create", "-d", str(defs), "-a", ACTIONS]
    code = f"from statemachine.cli import main; main({[*argv, '--metrics-port', '0']!r})"
    done = run_python(code, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "durable-statemachine[metrics]" in done.stderr


# -- statemachine worker --metrics-port ------------------------------------------------------


def test_a_port_in_use_is_a_clear_error(engine: Engine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(StatemachineError, match=f"cannot serve metrics on 127.0.0.1:{port}"),
            observability.serving(engine, port, "127.0.0.1"),
        ):
            pass
    with observability.serving(engine, 0, "127.0.0.1") as bound:  # 0: any free port
        assert bound
        assert httpx.get(f"http://127.0.0.1:{bound}/metrics", timeout=10).status_code == 200
    with observability.serving(engine, None, "127.0.0.1") as nothing:
        assert nothing is None


def scrape_until(url: str, want: Any, proc: subprocess.Popen[bytes], log: Path) -> Samples:
    """Scrape until ``want(samples)`` holds: a worker counts just after its commit, which a
    reader of the database may see first."""
    deadline = time.monotonic() + 60
    found: Samples = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.TransportError):
            res = httpx.get(url, timeout=5)
            assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
            found = samples(res.text)
            if want(found):
                return found
        time.sleep(0.2)
    pytest.fail(f"the scrape never matched: {found}\n{log.read_text()}")


@pytest.mark.timeout(180)
def test_a_worker_serves_its_metrics_over_http(engine: Engine, db_url: str, tmp_path: Path) -> None:
    port = free_port()
    defs = observed.write_definitions(tmp_path / "worker-definitions")
    args = ["--db", db_url, "-d", str(defs), "-a", ACTIONS, "--poll-interval", "100ms"]
    log = tmp_path / "worker.log"
    with cli_worker([*args, "--metrics-port", str(port)], log) as proc:
        ids = [engine.start("observed"), engine.start("observed"), engine.start("doomed")]
        for iid in ids:
            engine.wait(iid, timeout=90)
        steps, ends = history_counts(engine)
        assert steps[("observed", "shaky", "retry")] == 2 and ends[("doomed", "failed")] == 1

        def counted(found: Samples) -> bool:
            return series(found, "statemachine_instances_total", "workflow", "status") == ends

        found = scrape_until(f"http://127.0.0.1:{port}/metrics", counted, proc, log)
        assert series(found, "statemachine_steps_total", "workflow", "step", "status") == steps
        durations = series(found, "statemachine_step_duration_seconds_count", "workflow", "step")
        assert durations[("observed", "shaky")] == 4
        gauge = series(found, "statemachine_instances", "status")
        assert gauge == {("completed",): 2, ("failed",): 1}
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log.read_text()
