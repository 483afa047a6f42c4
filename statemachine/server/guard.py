"""Request checks made from the headers alone, before the app reads a byte of the body.

In order: the ``Host`` must be allowed (DNS rebinding: a foreign page whose name resolves to
this server gets a 400; ``/health`` is exempt, probes address servers by IP); with a token set,
every path but the dashboard, ``/health`` and the API docs needs it (401); a state-changing call
from a foreign ``Origin`` is refused (403); a ``POST`` must be ``application/json`` (415: an
HTML form can post cross-site without a CORS preflight, JSON cannot); and a body larger than the
cap is refused with 413 once its ``Content-Length``, or the chunks received so far, pass it.

Pure ASGI, so that nothing is buffered before the checks: FastAPI reads a whole body before it
runs any dependency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statemachine.server import auth
from statemachine.server.errors import ApiError, error_response

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # bytes: far above any start input or event a person sends
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOST_EXEMPT = frozenset({"/health"})
# with a token, every other path needs it (an unknown one too: fail closed)
OPEN_PATHS = frozenset(
    {"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
OPEN_PREFIX = "/dashboard/"
STREAM_PATH = re.compile(r"^/api/(?:stream|instances/[^/]+/stream)$")
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_host(host: str) -> str:
    """A host name as compared: lower case, no brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def split_host(header: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` from a ``Host`` header; None if it is not one."""
    try:
        parts = urlsplit("//" + header.strip())
        return normalize_host(parts.hostname or ""), parts.port
    except ValueError:  # a bad port or bracket
        return None


class _ClientGone(Exception):
    """The client disconnected while its body was being read."""


class Guard:
    """The checks above, as ASGI middleware around the app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        tickets: auth.Tickets,
        allowed_hosts: Iterable[str],
        max_body: int,
    ) -> None:
        self.app = app
        self.token = token
        self.tickets = tickets
        hosts = {normalize_host(h) for h in allowed_hosts}
        self.any_host = ANY_HOST in hosts
        self.hosts = frozenset(hosts - {ANY_HOST})
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            self._check(scope, headers)
        except ApiError as exc:
            await _refuse(exc, scope, receive, send)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _ClientGone:
            return
        if body is None:
            await _refuse(_too_large(self.max_body), scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> None:
        path = route_path(scope)
        method: str = scope["method"]
        host = headers.get("host", "")
        if path not in HOST_EXEMPT:
            self._check_host(host)
        if self.token is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIX):
            self._check_auth(path, scope, headers)
        if method not in SAFE_METHODS and "origin" in headers:
            _check_origin(headers["origin"], host)
        if method == "POST":
            _check_json(headers.get("content-type", ""))
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise _too_large(self.max_body)

    def _check_host(self, header: str) -> None:
        if self.any_host:
            return
        found = split_host(header)
        if found is None or found[0] not in self.hosts:
            name = found[0] if found else header
            raise ApiError(
                400,
                "host_not_allowed",
                f"this server does not answer for host {name!r}: "
                f"start it with --allowed-host {name or 'NAME'} to allow that name",
            )

    def _check_auth(self, path: str, scope: Scope, headers: dict[str, str]) -> None:
        assert self.token is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            auth.check(self.token, credentials.strip())
            return
        if STREAM_PATH.match(path):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            tickets = query.get("ticket")
            if tickets:
                if not self.tickets.redeem(tickets[0]):
                    raise auth.unauthorized(
                        "the stream ticket is not valid, used or expired: "
                        "get a new one with POST /api/stream-ticket"
                    )
                return
        auth.check(self.token, None)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the cap (nothing more is read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the ``root_path`` of an app mounted under a prefix
    (as Starlette's router strips it), so a mounted app is guarded the same."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _headers(scope: Scope) -> dict[str, str]:
    # the first of a repeated header counts (Host, Origin, Content-Type are single-valued)
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        found.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _check_origin(origin: str, host_header: str) -> None:
    """A browser names the page's origin on every cross-origin POST: it must be this server."""
    host = split_host(host_header)
    try:
        parts = urlsplit(origin.strip())
        scheme, name, port = parts.scheme, normalize_host(parts.hostname or ""), parts.port
    except ValueError:
        scheme, name, port = "", "", None
    same = host is not None and scheme in DEFAULT_PORTS and name == host[0]
    if same and host is not None:
        default = DEFAULT_PORTS[scheme]
        # a Host without a port: the default port of the scheme (a TLS proxy may sit between)
        same = (port or default) == (host[1] or default)
    if not same:
        raise ApiError(
            403,
            "forbidden_origin",
            f"requests from origin {origin!r} are refused: only pages served by this server "
            "(or clients that send no Origin) may change anything",
        )


def _check_json(content_type: str) -> None:
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "POST requests must be sent with 'Content-Type: application/json' "
            "(also those with an empty body, such as cancel)",
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the request body is larger than {limit} bytes (the cap)"
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, as one message; then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
    await response(scope, receive, send)
