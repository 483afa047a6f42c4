"""Metrics (Prometheus) and traces (OpenTelemetry) of what an engine runs; both optional extras.

Neither changes how a workflow runs. Counters count the history entries the engine publishes
after each commit (``Engine.on``), so they agree with the history; handler calls are timed,
and traced, by watchers the executor runs around each call (``Executor.watchers``). The extras'
packages are imported only when used: the core install runs without them, and asking for
metrics without ``prometheus_client`` is a ``StatemachineError`` that names the extra.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import time
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from statemachine import errors
from statemachine.definition import models
from statemachine.observability import observed
from statemachine.runtime.context import StepContext
from statemachine.runtime.outcome import Outcome

if TYPE_CHECKING:
    from statemachine.observability import metrics

METRICS_HINT = "pip install 'durable-statemachine[metrics]'"


@functools.cache
def _has_opentelemetry() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # no parent package, or one blocked in sys.modules
        return False


def instrument(engine: observed.Observed) -> None:
    """Trace the engine's step attempts when OpenTelemetry is installed (extra ``otel``); the
    spans are recorded once a tracer provider is configured, and cost a check until then."""
    if _has_opentelemetry():
        engine.executor.watch(_traced, when=_tracing_configured)


class _TracingConfigured:
    """Whether a tracer provider is set (until then, attempts are not watched at all).

    OpenTelemetry's own lookup reads the environment on every call while no provider is set,
    which would cost every step attempt a few microseconds: the answer "not yet" is kept for a
    second unless a provider was set meanwhile (``set_tracer_provider``, seen at once); "yes"
    for good, as a provider is set once per process."""

    RECHECK = 1.0  # seconds a "not configured" answer stands

    def __init__(self) -> None:
        self.known = False
        self.until = 0.0
        self.tracing: types.ModuleType | None = None

    def __call__(self) -> bool:
        if self.known:
            return True
        if self.tracing is None:  # opentelemetry: imported once, at the first step attempt
            import statemachine.observability.tracing as found

            self.tracing = found
        tracing = self.tracing
        now = time.monotonic()
        if now < self.until and not tracing.provider_set():
            return False
        self.known = tracing.configured()
        self.until = now + self.RECHECK
        return self.known


_tracing_configured = _TracingConfigured()


def _traced(
    ctx: StepContext, policy: models.RetryPolicy | None
) -> AbstractContextManager[Callable[[Outcome], None]]:
    try:
        import statemachine.observability.tracing as tracing  # opentelemetry: once a step runs
    except ImportError:  # an install too broken to import: steps run untraced, as without it
        return contextlib.nullcontext(_untraced)
    return tracing.attempt(ctx, policy)


def _untraced(outcome: Outcome) -> None:
    """The outcome of a call nothing traces."""


def _metrics() -> types.ModuleType:
    try:
        import statemachine.observability.metrics as found  # prometheus_client: when asked
    except ImportError as exc:
        raise errors.StatemachineError(
            f"metrics need the metrics extra ({exc.name} is missing): {METRICS_HINT}"
        ) from None
    return found


def metrics_for(engine: observed.Observed) -> metrics.Metrics:
    """The engine's metrics, counting from the first call (one registry per engine)."""
    found: metrics.Metrics = _metrics().for_engine(engine)
    return found


@contextlib.contextmanager
def serving(engine: observed.Observed, port: int | None, host: str) -> Iterator[int | None]:
    """The engine's metrics over HTTP on ``host:port`` while the block runs (the worker's
    ``--metrics-port``); yields the port bound, or None, doing nothing, when ``port`` is."""
    if port is None:
        yield None
        return
    with _metrics().serving(engine, port, host) as bound:
        yield bound
