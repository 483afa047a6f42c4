"""Workflows and actions for the observability tests, run in process and by ``statemachine
worker`` subprocesses (``--actions tests.integration.programs.observed:ACTIONS``).

With ``OBS_SPANS`` set to a folder, importing this module configures OpenTelemetry as a user's
actions module would: every span is written at once, as one JSON line, to ``<pid>.jsonl`` in
that folder, so a test reads the spans of every worker process that ran a step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from statemachine import StepContext

DEFINITIONS = {
    # a step that succeeds, one that fails once and is retried, then one more
    "observed.yaml": """
id: observed
version: 1
steps:
  - id: first
    action: ok
  - id: shaky
    action: flaky
    maxRetries: 2
    retryDelay: 10ms
  - id: last
    action: ok
""",
    # a step that fails every attempt: retried once, then the instance fails
    "doomed.yaml": """
id: doomed
version: 1
steps:
  - id: broken
    action: broken
    maxRetries: 1
    retryDelay: 10ms
""",
    # waits between its steps: a worker that stops meanwhile leaves the rest to another
    "gated.yaml": """
id: gated
version: 1
steps:
  - id: first
    action: ok
  - id: gate
    type: wait
    event: go
  - id: last
    action: ok
""",
}


def write_definitions(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DEFINITIONS.items():
        (folder / name).write_text(text)
    return folder


def ok(data: Any) -> dict[str, Any]:
    return {"ok": True}


def flaky(data: Any, ctx: StepContext) -> dict[str, Any]:
    """Fails its first attempt of each instance, succeeds after."""
    if ctx.attempt == 1:
        raise RuntimeError("first attempts fail")
    return {"attempt": ctx.attempt}


def broken(data: Any) -> None:
    raise RuntimeError("always broken")


ACTIONS = {"ok": ok, "flaky": flaky, "broken": broken}


def _export_spans(folder: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    path = Path(folder) / f"{os.getpid()}.jsonl"

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with path.open("a") as out:
                for span in spans:
                    context, parent = span.get_span_context(), span.parent
                    line = {
                        "pid": os.getpid(),
                        "name": span.name,
                        "trace_id": context.trace_id if context else None,
                        "span_id": context.span_id if context else None,
                        "parent_id": parent.span_id if parent else None,
                        "attributes": dict(span.attributes or {}),
                    }
                    out.write(json.dumps(line) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    trace.set_tracer_provider(provider)


if os.environ.get("OBS_SPANS"):
    _export_spans(os.environ["OBS_SPANS"])
