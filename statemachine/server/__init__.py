"""The HTTP API and dashboard (the ``server`` extra): ``create_app(engine, token=None)``.

``statemachine serve`` runs it with uvicorn; any ASGI server works with ``create_app``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import sse_starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"statemachine.server needs the server extra ({exc.name} is missing): "
        "pip install 'durable-statemachine[server]'"
    ) from exc

from statemachine.server.app import create_app

__all__ = ["create_app"]
