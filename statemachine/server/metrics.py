"""``GET /metrics``: the engine's Prometheus metrics (``statemachine.observability``).

With a token set it needs the token like the API (the guard fails closed on every path it does
not list as open): the metrics name workflows and steps, and Prometheus sends a bearer token
(``authorization: {credentials: ...}`` in a scrape config). Its ``Host`` must be one the server
answers for, as for the API: scrape an allowed name, or add ``--allowed-host``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from statemachine import errors, observability
from statemachine.engine import Engine
from statemachine.server.errors import ApiError


def metrics_router(engine: Engine) -> APIRouter:
    """Counting starts here, as the app is made; without ``prometheus_client`` the route
    answers 501 with the extra to install (the rest of the server works as usual)."""
    router = APIRouter()
    try:
        found = observability.metrics_for(engine)
    except errors.StatemachineError as exc:
        missing = ApiError(501, "not_implemented", str(exc))

        @router.get("/metrics", include_in_schema=False)
        def unavailable() -> Response:
            raise missing

        return router

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(found.render(), media_type=found.content_type)

    return router
