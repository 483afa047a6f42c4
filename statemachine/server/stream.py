"""Server-sent events: engine events as they happen, one SSE message per event.

The engine calls subscribers from its own threads; each stream hands events to its request's
event loop with ``call_soon_threadsafe`` and unsubscribes when the response ends, however it
ends (client gone, server stopping, queue overflow).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from statemachine.engine import Engine

PING_SECONDS = 15.0  # keeps proxies from closing an idle stream
QUEUE_SIZE = 1000  # events a slow client may lag behind before its stream is closed
SHUTDOWN_GRACE_SECONDS = 2.0  # time streams get to end by themselves when the server stops
OVERFLOW = "stream.overflow"  # sent, then the stream ends: the client reloads and reconnects

Event = dict[str, Any]


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


def event_stream(engine: Engine, match: Callable[[Event], bool]) -> EventSourceResponse:
    """Subscribe now (before the headers go out, so nothing is missed), stream until closed."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE + 1)

    def put(event: Event) -> None:  # on the request's loop
        if queue.full():
            return  # the overflow marker is already queued
        if queue.qsize() == QUEUE_SIZE:
            event = {"type": OVERFLOW, "message": "the client fell too far behind"}
        queue.put_nowait(event)

    def on_event(event: Event) -> None:  # on an engine thread
        if match(event):
            # a closed loop means nobody is listening any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(put, event)

    off = engine.on("*", on_event)

    shutdown = anyio.Event()  # set by sse-starlette when the server stops

    async def events() -> AsyncIterator[ServerSentEvent]:
        # end on shutdown rather than be cancelled, so the response finishes properly
        stop = asyncio.ensure_future(shutdown.wait())
        get: asyncio.Future[Event] | None = None
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    return
                event = get.result()
                yield ServerSentEvent(
                    data=json.dumps(event, default=str, separators=(",", ":")),
                    event=str(event.get("type", "message")),
                )
                if event.get("type") == OVERFLOW:
                    return
        finally:
            stop.cancel()
            if get is not None:
                get.cancel()

    return _Stream(events(), off, shutdown)
