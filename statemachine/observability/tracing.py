"""OpenTelemetry spans: each instance is one trace, each step attempt one span in it.

An instance's trace id, and the span id of the root its attempts hang from, are derived from
the instance id (a hash): every process that runs one of its steps computes the same ones, with
nothing stored and no schema change, so attempts run by different workers, or after a restart,
join one trace. That root is a remote parent that no process exports (no process sees the whole
instance): tracing backends show the attempts as children of one missing root.

A span is current while its handler runs, so spans the handler makes itself nest under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace

from statemachine.definition import models
from statemachine.observability import observed
from statemachine.runtime.context import StepContext
from statemachine.runtime.outcome import Outcome

_log = logging.getLogger("statemachine.tracing")
TRACER = "statemachine"
WORKFLOW = "statemachine.workflow"
STEP = "statemachine.step"
ATTEMPT = "statemachine.attempt"
OUTCOME = "statemachine.outcome"
INSTANCE = "statemachine.instance_id"


def trace_ids(instance_id: str) -> tuple[int, int]:
    """(trace id, root span id) of an instance: the same in every process, never zero."""
    digest = hashlib.sha256(instance_id.encode("utf-8", "surrogatepass")).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def instance_context(instance_id: str) -> otel_context.Context:
    """A context whose current span is the instance's root (remote, sampled)."""
    trace_id, span_id = trace_ids(instance_id)
    root = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(root))


def provider_set() -> bool:
    """Whether ``trace.set_tracer_provider`` was called: a read of the module's global, which
    ``configured`` would otherwise reach through a lookup of the environment."""
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


def configured() -> bool:
    """Whether a tracer provider was set: until then spans would go nowhere."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def outcome_name(outcome: Outcome, policy: models.RetryPolicy | None, attempt: int) -> str:
    """``completed``, ``retry`` or ``failed``: what the interpreter will record for it
    (``Run.fail`` retries a retryable error while attempts remain)."""
    if outcome.ok:
        return "completed"
    if outcome.retryable and policy is not None and attempt < policy.max_attempts:
        return "retry"
    return "failed"


def _ignore(outcome: Outcome) -> None:
    """Nothing traces: the outcome goes nowhere."""


@contextlib.contextmanager
def attempt(
    ctx: StepContext, policy: models.RetryPolicy | None
) -> Iterator[Callable[[Outcome], None]]:
    """A span around one handler call (``Executor.watchers``), in the instance's trace."""
    if not configured():
        yield _ignore
        return
    step = observed.step_label(ctx.step_name)
    attributes: dict[str, str | int] = {
        WORKFLOW: ctx.workflow_name,
        STEP: step,
        ATTEMPT: ctx.attempt,
        INSTANCE: ctx.instance_id,
    }
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"{ctx.workflow_name}/{step}",
        context=instance_context(ctx.instance_id),
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:

        def tell(outcome: Outcome) -> None:
            try:
                _ended(span, outcome_name(outcome, policy, ctx.attempt), outcome)
            except Exception:  # telemetry must never break a step
                _log.exception("could not record the span of step %s", ctx.step_name)

        try:
            yield tell
        except BaseException as exc:  # cancelled (a lost race, a cancel) or interrupted
            cancelled = isinstance(exc, asyncio.CancelledError)
            span.set_attribute(OUTCOME, "cancelled" if cancelled else "interrupted")
            raise


def _ended(span: trace.Span, name: str, outcome: Outcome) -> None:
    span.set_attribute(OUTCOME, name)
    if outcome.ok:
        return
    error = outcome.error or {}
    message = str(error.get("message", ""))
    span.set_status(trace.Status(trace.StatusCode.ERROR, message))
    span.add_event(
        "exception", {"exception.type": str(error.get("type", "")), "exception.message": message}
    )
