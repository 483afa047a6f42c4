"""The optional bearer token, stream tickets, and keeping both out of the server's log.

Every API call sends ``Authorization: Bearer T``. Browsers' ``EventSource`` cannot set headers,
so a stream may instead be opened with ``?ticket=``: a random, single-use ticket that lives a
minute, got with ``POST /api/stream-ticket`` (which itself needs the token). The token never
goes in a URL, where access logs, proxies and browser history would keep it. Tokens are
compared in constant time. The checks themselves run in ``guard.Guard``, from the headers,
before any body is read; the FastAPI security schemes here only document them in OpenAPI.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time

from fastapi.security import APIKeyQuery, HTTPBearer

from statemachine.server.errors import ApiError

TICKET_SECONDS = 60.0  # a ticket opens a stream within this time of being issued, once
MAX_TICKETS = 10_000  # live tickets kept; beyond that the oldest are dropped
# a secret in a query string, as an access log line shows it
SECRET_IN_QUERY = re.compile(r"([?&](?:token|ticket)=)[^&\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"

bearer = HTTPBearer(auto_error=False, description="The token given to `serve --token`.")
ticket_query = APIKeyQuery(
    name="ticket",
    auto_error=False,
    description="A stream ticket from `POST /api/stream-ticket`, for EventSource (streams only).",
)


def check(expected: str, given: str | None) -> None:
    if given is None:
        raise unauthorized("this server needs a token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise unauthorized("the token is not valid")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class Tickets:
    """Single-use stream tickets: random, short-lived, held in memory (one server process)."""

    def __init__(self, lifetime: float = TICKET_SECONDS) -> None:
        self.lifetime = lifetime
        self._expiry: dict[str, float] = {}  # insertion order is issue order
        self._lock = threading.Lock()

    def issue(self) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            while len(self._expiry) >= MAX_TICKETS:
                del self._expiry[next(iter(self._expiry))]
            self._expiry[ticket] = now + self.lifetime
        return ticket

    def redeem(self, ticket: str) -> bool:
        """True once for a ticket issued here that has not expired; it is used up either way."""
        with self._lock:
            expiry = self._expiry.pop(ticket, None)
        return expiry is not None and time.monotonic() < expiry

    def _prune(self, now: float) -> None:
        for ticket, expiry in list(self._expiry.items()):
            if expiry > now:
                break  # the rest were issued later, so expire later
            del self._expiry[ticket]


def redact(text: str) -> str:
    return SECRET_IN_QUERY.sub(r"\1" + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Masks ``token=`` and ``ticket=`` query values in log records (uvicorn's access log
    prints every request's URL): a dashboard link ``/?token=T`` or an old client's stream URL
    must not leave the token in the server's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log(name: str = "uvicorn.access") -> None:
    """Install ``RedactSecrets`` on a logger, once (``logging.config`` keeps logger filters)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
