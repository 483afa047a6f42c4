"""``create_app(engine, ...)``: the API routes, error handlers, request guard and dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from importlib import metadata, resources
from typing import Any

from fastapi import FastAPI, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response

from statemachine import errors
from statemachine.engine import Engine
from statemachine.server import auth, guard, metrics, routes, schemas
from statemachine.server import errors as http_errors

ASSETS = {"app.js": "text/javascript", "docs.js": "text/javascript", "style.css": "text/css"}
# the dashboard loads nothing from elsewhere; the stream and API are same-origin
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
DESCRIPTION = """Start, inspect and control durable workflow instances.

Errors are `{"error": {"code": ..., "message": ...}}`. With a token set, every route but the
dashboard (`GET /`), `GET /health` and these docs needs `Authorization: Bearer <token>`; the
two stream routes also take `?ticket=` (from
`POST /api/stream-ticket`: single-use, valid for a minute) because browsers' EventSource cannot
send headers. Every `POST` must be sent with `Content-Type: application/json` (415), even with an
empty body; a state-changing call from a foreign `Origin` is a 403; a `Host` the server was not
told to answer for is a 400; a body over the cap is a 413. `GET /metrics` (not listed here)
serves Prometheus text, and needs the token like the API.
"""


def worker_state(worker: Future[Any] | None) -> schemas.WorkerState:
    if worker is None:
        return "none"
    if not worker.done():
        return "running"
    if not worker.cancelled() and worker.exception() is not None:
        return "failed"
    return "stopped"


def _asset(name: str) -> bytes:
    return resources.files("statemachine.server").joinpath("dashboard", name).read_bytes()


def _version() -> str:
    try:
        return metadata.version("durable-statemachine")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0"


def create_app(
    engine: Engine,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    *,
    max_body: int = guard.DEFAULT_MAX_BODY,
    worker: Future[Any] | None = None,
) -> FastAPI:
    """An ASGI app serving ``engine``; it neither runs a worker nor closes the engine.

    ``allowed_hosts`` are the names the app answers for (the ``Host`` header; ``"*"`` for any),
    by default the localhost names; ``max_body`` caps request bodies (bytes); ``worker`` is the
    future of a worker running beside the app (``with engine.worker() as worker``), which
    ``/health`` reports on: a worker that ended or crashed makes it a 503.
    """
    if token is not None and (not isinstance(token, str) or not token):
        raise errors.InputValidationError("token must be a non-empty string")
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise errors.InputValidationError("max_body must be a positive number of bytes")
    hosts = list(guard.LOCAL_HOSTS if allowed_hosts is None else allowed_hosts)
    if isinstance(allowed_hosts, str) or not all(isinstance(h, str) and h for h in hosts):
        raise errors.InputValidationError("allowed_hosts must be a list of host names")
    # /docs is our own page over /openapi.json (FastAPI's loads Swagger UI from a CDN: blank
    # offline, and refused by the dashboard's Content-Security-Policy)
    app = FastAPI(
        title="statemachine",
        version=_version(),
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    http_errors.install(app)
    tickets = auth.Tickets()
    auth.redact_access_log()

    # the guard checks the token; these only document it in OpenAPI
    api_deps = [Security(auth.bearer)] if token else []
    stream_deps = [Security(auth.bearer), Security(auth.ticket_query)] if token else []
    app.include_router(routes.api_router(engine, tickets), dependencies=api_deps)
    app.include_router(routes.stream_router(engine), dependencies=stream_deps)
    app.include_router(metrics.metrics_router(engine))  # Prometheus text; the token if set
    app.add_middleware(
        guard.Guard, token=token, tickets=tickets, allowed_hosts=hosts, max_body=max_body
    )

    @app.get(
        "/health",
        summary="Liveness, and the worker's",
        tags=["server"],
        response_model=schemas.Health,
        responses={503: {"model": schemas.Health, "description": "The worker is down."}},
    )
    def health() -> JSONResponse:
        state = worker_state(worker)
        ok = state in ("running", "none")
        body = schemas.Health(status="ok" if ok else "unavailable", worker=state)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    index = _asset("index.html")
    docs = _asset("docs.html")
    assets = {name: _asset(name) for name in ASSETS}

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(index, headers=DASHBOARD_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        """The API reference, drawn from /openapi.json by a script of ours: works offline."""
        return HTMLResponse(docs, headers=DASHBOARD_HEADERS)

    def static(name: str) -> None:
        def asset() -> Response:
            return Response(assets[name], media_type=ASSETS[name], headers=DASHBOARD_HEADERS)

        app.get(f"/dashboard/{name}", include_in_schema=False)(asset)

    for name in ASSETS:
        static(name)
    return app
