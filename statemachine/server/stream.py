"""Server-sent events: history entries read from the database by cursor, one SSE message each.

Whichever process wrote an entry (``serve``'s own worker or a separate ``statemachine worker``),
every stream reads it from the history table, in order, and sends its cursor as the SSE ``id:``:
a client that reconnects with ``Last-Event-ID`` resumes right after it, nothing lost or twice.
A stream reads when this process's engine publishes an event (at once) and otherwise every
``POLL_SECONDS`` (entries written elsewhere), and unsubscribes when the response ends, however
it ends (client gone, server stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from statemachine.engine import Engine
from statemachine.store.feed import BATCH, Feed
from statemachine.store.repository import FeedEntry

PING_SECONDS = 15.0  # keeps proxies from closing an idle stream
POLL_SECONDS = 0.25  # how soon an entry written by another process is streamed
SHUTDOWN_GRACE_SECONDS = 2.0  # time streams get to end by themselves when the server stops

Event = dict[str, Any]


def parse_cursor(value: str | None) -> int | None:
    """A ``Last-Event-ID``; None when absent or not one of ours (the stream starts now)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 18:
        return None
    return int(value.strip())


def message(row: FeedEntry) -> ServerSentEvent:
    h = row.entry
    event = {
        **h.data,
        "type": h.type,
        "instance_id": row.instance_id,
        "workflow_name": row.workflow_name,
        "step": h.step,
        "seq": h.seq,
        "at": h.at.isoformat(),
    }
    return ServerSentEvent(
        id=str(row.cursor),
        event=h.type,
        data=json.dumps(event, default=str, separators=(",", ":")),
    )


class _Stream(EventSourceResponse):
    """An SSE response that unsubscribes from the engine when it ends, however it ends."""

    def __init__(
        self,
        events: AsyncIterator[ServerSentEvent],
        off: Callable[[], None],
        shutdown: anyio.Event,
    ) -> None:
        super().__init__(
            events,
            ping=PING_SECONDS,
            headers={"Cache-Control": "no-store"},
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        )
        self._off = off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._off()


async def event_stream(
    engine: Engine,
    instance_id: str | None,
    last_event_id: str | None,
    match: Callable[[FeedEntry], bool] = lambda _: True,
) -> EventSourceResponse:
    """Stream the history of ``instance_id`` (None: of every instance) after ``last_event_id``,
    or from now. The position is taken before the headers go out, so nothing is missed."""
    repo = engine.repo
    cursor = parse_cursor(last_event_id)
    if cursor is None:
        cursor = await run_in_threadpool(repo.history_end, instance_id)
    feed = Feed(repo, instance_id, cursor)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_event(event: Event) -> None:  # on an engine thread, after its commit
        if instance_id is None or event.get("instance_id") == instance_id:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
                loop.call_soon_threadsafe(wake.set)

    off = engine.on("*", on_event)
    shutdown = anyio.Event()  # set by sse-starlette when the server stops

    async def events() -> AsyncIterator[ServerSentEvent]:
        # end on shutdown rather than be cancelled, so the response finishes properly
        stop = asyncio.ensure_future(shutdown.wait())
        try:
            while not stop.done():
                wake.clear()
                rows = await run_in_threadpool(feed.read)
                for row in rows:
                    if match(row):
                        yield message(row)
                if len(rows) == BATCH:
                    continue  # more to catch up on
                woken = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({woken, stop}, timeout=POLL_SECONDS)
                finally:
                    woken.cancel()
        finally:
            stop.cancel()

    return _Stream(events(), off, shutdown)
