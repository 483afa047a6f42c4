"""Prometheus metrics of one engine, in a registry of its own (not the process-wide default, so
several engines in one process never mix their counts).

Counters count what this process did, from the history entries its engine publishes after each
commit: they add up to the history's own counts. The ``statemachine_instances`` gauge is read
from the database at scrape time, so it is the same whichever process is scraped.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from statemachine import errors, records
from statemachine.definition import models
from statemachine.observability import observed
from statemachine.runtime.context import StepContext
from statemachine.runtime.outcome import Outcome
from statemachine.store import repository as repo
from statemachine.store import stats

_log = logging.getLogger("statemachine.metrics")
CONTENT_TYPE = prom.CONTENT_TYPE_LATEST
# steps last from milliseconds to hours: the default buckets stop at 10 s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: history entry type -> the ``status`` label of ``statemachine_steps_total``
STEP_STATUS = {
    "workflow.step.completed": "completed",
    "workflow.step.failed": "failed",
    "workflow.step.retry": "retry",
    "workflow.step.cancelled": "cancelled",
    "workflow.step.skipped": "skipped",
    "workflow.step.compensated": "compensated",
}
#: history entry type -> the ``status`` label of ``statemachine_instances_total``
INSTANCE_STATUS = {
    "workflow.started": "started",
    "workflow.completed": "completed",
    "workflow.failed": "failed",
    "workflow.cancelled": "cancelled",
    "workflow.timed_out": "timed_out",
}


class _Instances(Collector):
    """``statemachine_instances{status}``: counted in the database at each scrape."""

    def __init__(self, store: repo.Repository) -> None:
        self.store = store

    def collect(self) -> Iterable[prom.Metric]:
        try:
            counts = stats.instances_by_status(self.store)
        except errors.StoreError as exc:  # a scrape during an outage: the counters still answer
            _log.warning("statemachine_instances left out: the database did not answer: %s", exc)
            return []
        family = GaugeMetricFamily(
            "statemachine_instances",
            "Instances in the database by status, now (all processes).",
            labels=["status"],
        )
        for status in records.STATUSES:
            family.add_metric([status], counts.get(status, 0))
        return [family]


class Metrics:
    """The registry and metrics of one engine; made by ``for_engine``, which subscribes it."""

    content_type = CONTENT_TYPE  # of ``render``

    def __init__(self, store: repo.Repository) -> None:
        self.registry = prom.CollectorRegistry()
        self.steps = prom.Counter(
            "statemachine_steps",
            "Step outcomes recorded by this process (history entries).",
            ["workflow", "step", "status"],
            registry=self.registry,
        )
        self.instances = prom.Counter(
            "statemachine_instances",
            "Instances started and ended by this process (history entries).",
            ["workflow", "status"],
            registry=self.registry,
        )
        self.durations = prom.Histogram(
            "statemachine_step_duration_seconds",
            "How long step handlers ran in this process, each attempt.",
            ["workflow", "step"],
            registry=self.registry,
            buckets=BUCKETS,
        )
        # its name is the counter's without _total: registered unchecked (no describe)
        self.registry.register(_Instances(store))

    def entry(self, event: dict[str, Any]) -> None:
        """A history entry, published after its commit (the engine's bus)."""
        kind = event.get("type")
        workflow = str(event.get("workflow_name") or "")
        if (status := STEP_STATUS.get(str(kind))) is not None:
            step = observed.step_label(str(event.get("step") or ""))
            self.steps.labels(workflow, step, status).inc()
        elif (status := INSTANCE_STATUS.get(str(kind))) is not None:
            self.instances.labels(workflow, status).inc()

    @contextlib.contextmanager
    def timed(
        self, ctx: StepContext, policy: models.RetryPolicy | None
    ) -> Iterator[Callable[[Outcome], None]]:
        """Around one handler call (``Executor.watchers``): its duration, whatever its end."""
        began = time.perf_counter()
        try:
            yield _ignore
        finally:
            step = observed.step_label(ctx.step_name)
            self.durations.labels(ctx.workflow_name, step).observe(time.perf_counter() - began)

    def render(self) -> bytes:
        """The Prometheus text exposition (``CONTENT_TYPE``)."""
        return prom.generate_latest(self.registry)


def _ignore(outcome: Outcome) -> None:
    """Durations do not depend on the outcome."""


_engines: weakref.WeakKeyDictionary[observed.Observed, Metrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def for_engine(engine: observed.Observed) -> Metrics:
    """The engine's metrics, subscribed on first use; later calls return the same ones (the
    server's ``/metrics`` and a worker's port count once). They hold no reference to the
    engine, so it is collected as usual."""
    with _lock:
        found = _engines.get(engine)
        if found is None:
            found = _engines[engine] = Metrics(engine.repo)
            engine.bus.on("*", found.entry)
            engine.executor.watch(found.timed)
        return found


class _Handler(http.server.BaseHTTPRequestHandler):
    """Any GET: the text exposition. Always the classic text format, never OpenMetrics (which
    ``prometheus_client``'s own server may negotiate): there the ``statemachine_instances``
    gauge and the ``statemachine_instances_total`` counter would be one name twice."""

    server: _Server

    def do_GET(self) -> None:
        body = self.server.metrics.render()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the worker's output."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.metrics = metrics
        if ":" in address[0]:  # an IPv6 address, "::" for every interface
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


@contextlib.contextmanager
def serving(engine: observed.Observed, port: int, host: str = "127.0.0.1") -> Iterator[int]:
    """The engine's metrics over HTTP on ``host:port`` (any path) while the block runs, from
    a thread of their own; yields the port (``0`` picks a free one)."""
    try:
        server = _Server((host, port), for_engine(engine))
    except OSError as exc:
        raise errors.StatemachineError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="sm-metrics", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
