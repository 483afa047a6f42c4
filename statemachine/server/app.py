"""``create_app(engine, token=None)``: the API routes, error handlers, auth and the dashboard."""

from __future__ import annotations

from importlib import metadata, resources

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, Response

from statemachine import errors
from statemachine.engine import Engine
from statemachine.server import auth, routes, schemas
from statemachine.server import errors as http_errors

ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# the dashboard loads nothing from elsewhere; the stream and API are same-origin
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
DESCRIPTION = """Start, inspect and control durable workflow instances.

Errors are `{"error": {"code": ..., "message": ...}}`. With a token set, every route but `GET /`
and `GET /health` needs `Authorization: Bearer <token>`; the two stream routes also take
`?token=` because browsers' EventSource cannot send headers.
"""


def _asset(name: str) -> bytes:
    return resources.files("statemachine.server").joinpath("dashboard", name).read_bytes()


def _version() -> str:
    try:
        return metadata.version("durable-statemachine")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0"


def create_app(engine: Engine, token: str | None = None) -> FastAPI:
    """An ASGI app serving ``engine``; it neither runs a worker nor closes the engine."""
    if token is not None and (not isinstance(token, str) or not token):
        raise errors.InputValidationError("token must be a non-empty string")
    app = FastAPI(title="statemachine", version=_version(), description=DESCRIPTION)
    app.state.engine = engine
    http_errors.install(app)

    api_deps = [Depends(auth.header_auth(token))] if token else []
    stream_deps = [Depends(auth.stream_auth(token))] if token else []
    app.include_router(routes.api_router(engine), dependencies=api_deps)
    app.include_router(routes.stream_router(engine), dependencies=stream_deps)

    @app.get("/health", summary="Liveness", tags=["server"])
    def health() -> schemas.Health:
        return schemas.Health()

    index = _asset("index.html")
    assets = {name: _asset(name) for name in ASSETS}

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(index, headers=DASHBOARD_HEADERS)

    def static(name: str) -> None:
        def asset() -> Response:
            return Response(assets[name], media_type=ASSETS[name], headers=DASHBOARD_HEADERS)

        app.get(f"/dashboard/{name}", include_in_schema=False)(asset)

    for name in ASSETS:
        static(name)
    return app
