"""OpenTelemetry (issue 21): each instance is one trace, each step attempt one span in it with
the workflow, step, attempt and outcome; the trace id is derived from the instance id, so steps
run by different worker processes join the same trace."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statemachine import Engine, StepContext, load_definitions, workflow
from statemachine.observability import tracing
from tests.integration.programs import observed
from tests.integration.programs.worker_support import cli_worker

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = "tests.integration.programs.observed:ACTIONS"
EXPORTER = InMemorySpanExporter()


class _WhileTesting(SpanProcessor):
    """Keeps spans only while a test of this file runs: the tracer provider is process-wide
    and set once, and later tests in the process need not fill memory with theirs."""

    def __init__(self) -> None:
        self.inner = SimpleSpanProcessor(EXPORTER)
        self.on = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


SWITCH = _WhileTesting()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry configured (once per process, as an application does), spans in memory."""
    if not tracing.configured():
        provider = TracerProvider()
        provider.add_span_processor(SWITCH)
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    SWITCH.on = True
    yield EXPORTER
    SWITCH.on = False
    EXPORTER.clear()


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(db_url)
    for name, fn in observed.ACTIONS.items():
        eng.action(name)(fn)
    eng.register(load_definitions(observed.write_definitions(tmp_path / "definitions")))
    yield eng
    eng.close()
    gc.collect()


def attempts(found: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> list[tuple[Any, ...]]:
    """(step, attempt, outcome) of each step span, in the order they ended."""
    return [
        (
            s.attributes[tracing.STEP],
            s.attributes[tracing.ATTEMPT],
            s.attributes[tracing.OUTCOME],
        )
        for s in found
        if s.attributes and tracing.STEP in s.attributes
    ]


def test_an_instance_is_one_trace_with_a_span_per_attempt(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    first, second = engine.execute("observed"), engine.execute("observed")
    assert first.status == second.status == "completed"
    found = spans.get_finished_spans()
    mine = [s for s in found if s.attributes and s.attributes[tracing.INSTANCE] == first.id]
    assert attempts(mine) == [
        ("first", 1, "completed"),
        ("shaky", 1, "retry"),
        ("shaky", 2, "completed"),
        ("last", 1, "completed"),
    ]
    trace_id, root = tracing.trace_ids(first.id)
    for span in mine:
        assert span.context is not None and span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == root
        assert span.attributes and span.attributes[tracing.WORKFLOW] == "observed"
        assert span.name == f"observed/{span.attributes[tracing.STEP]}"
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    retried = mine[1]
    assert retried.status.status_code == trace.StatusCode.ERROR
    assert retried.status.description == "first attempts fail"
    assert [e.name for e in retried.events] == ["exception"]
    assert mine[2].status.status_code == trace.StatusCode.UNSET
    # another instance, another trace
    theirs = {s.context.trace_id for s in found if s not in mine and s.context is not None}
    assert theirs == {tracing.trace_ids(second.id)[0]} != {trace_id}


def test_a_failed_step_and_the_handlers_own_spans(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    assert engine.execute("doomed").status == "failed"
    assert attempts(spans.get_finished_spans()) == [
        ("broken", 1, "retry"),
        ("broken", 2, "failed"),
    ]
    spans.clear()

    def traced(data: Any, ctx: StepContext) -> str:
        with trace.get_tracer("app").start_as_current_span("inner"):
            return ctx.instance_id

    engine.action("traced")(traced)
    engine.action("traced_async")(traced_async)
    engine.register(workflow("own").task("sync", "traced").task("async", "traced_async").build())
    inst = engine.execute("own")
    assert inst.status == "completed"
    found = spans.get_finished_spans()
    by_name = {s.name: s for s in found}
    assert set(by_name) == {"inner", "inner-async", "own/sync", "own/async"}
    for inner, step in (("inner", "own/sync"), ("inner-async", "own/async")):
        parent = by_name[inner].parent
        context = by_name[step].context
        assert parent is not None and context is not None
        assert parent.span_id == context.span_id  # the handler's span is the attempt's child
        assert by_name[inner].context.trace_id == tracing.trace_ids(inst.id)[0]  # type: ignore[union-attr]


async def traced_async(data: Any, ctx: StepContext) -> str:
    with trace.get_tracer("app").start_as_current_span("inner-async"):
        return ctx.instance_id


def test_the_trace_id_is_derived_from_the_instance_id() -> None:
    trace_id, root = tracing.trace_ids("order-42")
    assert (trace_id, root) == tracing.trace_ids("order-42")  # in any process
    assert 0 < trace_id < 2**128 and 0 < root < 2**64
    assert tracing.trace_ids("order-43")[0] != trace_id


# -- across worker processes -------------------------------------------------------------------


def wait_for(
    engine: Engine, iid: str, status: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 90
    while engine.get(iid).status != status:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{iid} is {engine.get(iid).status}:\n{log.read_text()}"
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_steps_run_by_two_worker_processes_join_one_trace(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spans"
    folder.mkdir()
    defs = observed.write_definitions(tmp_path / "worker-definitions")
    args = ["--db", db_url, "-d", str(defs), "-a", ACTIONS, "--poll-interval", "100ms"]
    iid = engine.start("gated")
    with cli_worker(args, tmp_path / "a.log", {"OBS_SPANS": str(folder)}) as a:
        wait_for(engine, iid, "waiting", a, tmp_path / "a.log")
        a.terminate()
        assert a.wait(60) == 0, (tmp_path / "a.log").read_text()
    engine.send_event(iid, "go")
    with cli_worker(args, tmp_path / "b.log", {"OBS_SPANS": str(folder)}) as b:
        wait_for(engine, iid, "completed", b, tmp_path / "b.log")
        b.terminate()
        assert b.wait(60) == 0, (tmp_path / "b.log").read_text()

    lines = [
        json.loads(line) for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    steps = {line["attributes"][tracing.STEP]: line for line in lines}
    assert set(steps) == {"first", "last"}
    assert steps["first"]["pid"] == a.pid and steps["last"]["pid"] == b.pid
    trace_id, root = tracing.trace_ids(iid)
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert {line["parent_id"] for line in lines} == {root}
    assert all(line["attributes"][tracing.OUTCOME] == "completed" for line in lines)


def test_a_provider_set_after_the_engine_is_seen_at_once() -> None:
    """The "not configured" answer is kept for a second (OpenTelemetry reads the environment
    on every lookup), but a provider set meanwhile is seen by the very next step."""
    import subprocess

    program = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from statemachine.observability import _TracingConfigured\n"
        "check = _TracingConfigured()\n"
        "assert not check() and not check()\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "assert check()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr
