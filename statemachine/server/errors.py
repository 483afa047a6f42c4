"""Every failure as ``{"error": {"code", "message", "details"?}}`` with the right status.

Engine errors map by class (their ``code`` is stable); FastAPI's own validation errors are
reshaped into the same form, malformed JSON is a 400, and only a real bug is a 500 ``internal``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from statemachine import errors
from statemachine.definition.issues import parse_loc

_log = logging.getLogger("statemachine.server")

# the first class of an error's MRO found here decides its status
STATUS: dict[type[errors.StatemachineError], int] = {
    errors.WorkflowNotFound: 404,
    errors.InstanceNotFound: 404,
    errors.InvalidTransition: 409,
    errors.LeaseLost: 409,
    errors.InputValidationError: 422,
    errors.DefinitionError: 422,
    errors.ExpressionError: 422,
    errors.StepError: 422,
    errors.StoreRefused: 422,  # the database refused the data: sending it again cannot help
    errors.StoreError: 503,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error the server itself raises (auth, bad query); rendered like engine errors."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(message)


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_of(exc: errors.StatemachineError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _details(exc: errors.StatemachineError) -> list[dict[str, Any]] | None:
    if isinstance(exc, errors.DefinitionError):
        return [
            {"message": i.message, "location": i.location, "line": i.line, "column": i.column}
            for i in exc.errors
        ]
    if isinstance(exc, errors.InputValidationError) and exc.errors:
        return [_input_issue(i) for i in exc.errors]
    return None


def _input_issue(issue: errors.Issue) -> dict[str, Any]:
    """An input's ``Issue`` in the pydantic-like form request errors have; ``loc`` starts
    inside the value sent (``input.order_id`` -> ``["order_id"]``), as it always has."""
    return {
        "loc": [str(part) for part in parse_loc(issue.location)[1:]],
        "msg": issue.message,
        "type": issue.code,
    }


def _pydantic_error(error: Any) -> dict[str, Any]:
    """Only JSON-safe keys: ``input`` and ``ctx`` may hold arbitrary objects."""
    return {
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


async def _statemachine_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.StatemachineError)
    status = status_of(exc)
    if status >= 500:
        _log.error("request failed: %s", exc, exc_info=exc)
    return error_response(status, exc.code, str(exc), _details(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = [_pydantic_error(e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in found):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    message = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in found)
    return error_response(422, "invalid_request", message or "invalid request", found)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _internal(_: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback and re-raises after this answer is sent
    return error_response(500, "internal", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.StatemachineError, _statemachine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _internal)
