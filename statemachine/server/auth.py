"""The optional bearer token: ``Authorization: Bearer T``, or ``?token=T`` on the SSE routes.

Browsers' ``EventSource`` cannot set headers, hence the query parameter there (and only there).
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from statemachine.server.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="The token given to `serve --token`.")
query = APIKeyQuery(
    name="token", auto_error=False, description="The token, for EventSource (streams only)."
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
Dependency = Callable[..., Awaitable[None]]


def check(expected: str, given: str | None) -> None:
    if given is None:
        raise _unauthorized("this server needs a token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise _unauthorized("the token is not valid")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def header_auth(expected: str) -> Dependency:
    async def require_token(
        credentials: Bearer = None,
    ) -> None:
        check(expected, credentials.credentials if credentials else None)

    return require_token


def stream_auth(expected: str) -> Dependency:
    async def require_token(
        credentials: Bearer = None,
        token: Annotated[str | None, Security(query)] = None,
    ) -> None:
        check(expected, credentials.credentials if credentials else token)

    return require_token
