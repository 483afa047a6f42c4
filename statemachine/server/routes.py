"""The JSON routes under ``/api``: workflows, instances, control, events and the streams.

Engine calls block, so the endpoints are plain ``def``: FastAPI runs them in its threadpool.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from statemachine import errors, records
from statemachine.definition import models
from statemachine.engine import Engine
from statemachine.server import auth, graph, schemas, stream

Instance = records.WorkflowInstance
MAX_OFFSET = 2**31 - 1  # databases take no larger OFFSET (SQLite: 64-bit; kept portable)
# ids and names are text columns, and Postgres text holds no NUL: such a value is a 422 here
NO_NUL = r"^[^\x00]*$"
InstanceId = Annotated[str, Path(description="Instance id.", pattern=NO_NUL)]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Resume after this event's `id:` (EventSource sends it when it reconnects); "
        "without it the stream starts now.",
    ),
]
SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "A Host this server does not answer for, or malformed JSON.",
        401: "Missing or wrong token.",
        403: "A state-changing call from a foreign Origin.",
        404: "Unknown workflow or instance.",
        409: "Not allowed in the instance's status.",
        413: "The body is larger than the cap.",
        415: "A POST without Content-Type: application/json.",
        422: "Invalid input, body or parameters.",
    }.items()
}


def workflow_info(definition: models.WorkflowDefinition) -> schemas.WorkflowInfo:
    return schemas.WorkflowInfo(
        name=definition.name,
        version=definition.version,
        hash=definition.hash,
        title=definition.title,
        description=definition.description,
        steps=[path for path, _ in definition.walk()],
        triggers=[t.event for t in definition.triggers],
        schedules=[f"{s.spec} ({s.timezone})" for s in definition.schedules],
        concurrency=None
        if definition.concurrency is None
        else schemas.ConcurrencyInfo(
            limit=definition.concurrency.limit, key=definition.concurrency.key
        ),
        priority=definition.priority,
        mermaid=definition.to_mermaid(),
        graph=graph.workflow_graph(definition),
    )


def api_router(engine: Engine, tickets: auth.Tickets) -> APIRouter:
    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.post("/stream-ticket", summary="A ticket to open a stream", tags=["streams"])
    def stream_ticket() -> schemas.StreamTicket:
        """For EventSource, which cannot send the token: open one stream with ``?ticket=``
        within a minute. Keeps the token itself out of URLs (and so out of access logs)."""
        return schemas.StreamTicket(ticket=tickets.issue(), expires_in=int(tickets.lifetime))

    @api.get("/workflows", summary="Registered workflows", tags=["workflows"])
    def list_workflows() -> list[schemas.WorkflowInfo]:
        """The latest registered version of every workflow, with its graph."""
        return [workflow_info(d) for d in sorted(engine.definitions(), key=lambda d: d.name)]

    @api.get("/schedules", summary="Schedules", tags=["workflows"])
    def list_schedules() -> list[records.ScheduleInfo]:
        """Every schedule on the database, with its next and last fire times (UTC)."""
        return engine.schedules()

    @api.post(
        "/workflows/{name}/instances",
        summary="Start an instance",
        tags=["instances"],
        status_code=201,
    )
    def start(
        name: Annotated[str, Path(description="Workflow name.")],
        body: Annotated[schemas.StartRequest | None, Body()] = None,
    ) -> Instance:
        """Start ``name`` with ``input``; a worker runs it. An empty body starts it with no input."""
        request = body or schemas.StartRequest()
        return engine.get(engine.start(name, request.input, request.instance_id))

    @api.get("/instances", summary="List instances", tags=["instances"])
    def list_instances(
        workflow: Annotated[
            str | None, Query(description="Only this workflow.", pattern=NO_NUL)
        ] = None,
        status: Annotated[
            records.InstanceStatus | None, Query(description="Only this status.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        parent: Annotated[
            str | None, Query(description="Only the children of this instance.", pattern=NO_NUL)
        ] = None,
        meta: Annotated[
            list[str] | None,
            Query(
                description="Only instances whose metadata has this key with this (string) "
                "value, as key:value; repeatable, all must match.",
            ),
        ] = None,
    ) -> list[Instance]:
        """Newest first."""
        if any(":" not in m[1:] for m in meta or []):
            raise errors.InputValidationError("meta takes key:value, e.g. meta=customer:c-1")
        wanted = dict(m.split(":", 1) for m in meta or [])
        return engine.list(
            workflow, status, limit, offset, metadata=wanted or None, parent_id=parent
        )

    @api.get("/instances/{instance_id}", summary="Get an instance", tags=["instances"])
    def get_instance(instance_id: InstanceId) -> Instance:
        """The instance with the result of every step, keyed by step path."""
        return engine.get(instance_id)

    @api.get("/instances/{instance_id}/history", summary="Instance history", tags=["instances"])
    def history(instance_id: InstanceId) -> list[records.HistoryEntry]:
        """Every recorded event of the instance, in order."""
        return engine.history(instance_id)

    def control(verb: str, doc: str) -> None:
        def endpoint(instance_id: InstanceId) -> Instance:
            getattr(engine, verb)(instance_id)
            return engine.get(instance_id)

        endpoint.__name__ = verb
        endpoint.__doc__ = doc
        summary = f"{verb.capitalize()} an instance"
        api.post(f"/instances/{{instance_id}}/{verb}", summary=summary, tags=["control"])(endpoint)

    control("cancel", "Cancel an active instance (terminal); its children are cancelled too.")
    control("pause", "No new step starts until resume.")
    control("resume", "Resume a paused instance.")
    control("retry", "Continue a failed instance from its failed step(s).")

    @api.post(
        "/instances/{instance_id}/replay",
        summary="Replay an instance",
        tags=["control"],
        status_code=201,
    )
    def replay(instance_id: InstanceId) -> Instance:
        """A new instance with the same input and definition version."""
        return engine.get(engine.replay(instance_id))

    @api.post(
        "/instances/{instance_id}/events",
        summary="Send an event to an instance",
        tags=["events"],
        status_code=202,
    )
    def send_event(instance_id: InstanceId, body: schemas.EventRequest) -> schemas.EventAccepted:
        """Delivered when the instance waits for ``name`` (kept in its inbox until then)."""
        engine.send_event(instance_id, body.name, body.data)
        return schemas.EventAccepted(instance_id=instance_id, name=body.name)

    @api.post("/events", summary="Emit an event", tags=["events"])
    def emit(
        body: schemas.EmitRequest,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> schemas.Started:
        """Start every workflow whose trigger matches the event; the same idempotency key
        (body field or ``Idempotency-Key`` header) again starts nothing: the same ids."""
        key = body.idempotency_key or idempotency_key
        return schemas.Started(started=engine.emit(body.name, body.data, idempotency_key=key))

    return api


def stream_router(engine: Engine) -> APIRouter:
    """The SSE routes (they alone also take a ``?ticket=``, for EventSource)."""
    api = APIRouter(prefix="/api", responses=ERRORS, tags=["streams"])

    @api.get(
        "/instances/{instance_id}/stream",
        summary="Stream an instance's events",
        response_class=EventSourceResponse,
        responses=SSE,
    )
    async def instance_stream(
        instance_id: InstanceId, last_event_id: LastEventId = None
    ) -> EventSourceResponse:
        """The instance's history entries as they are written, by any process: each SSE
        ``event:`` is the entry's type, its ``data:`` the JSON entry (``type``, ``instance_id``,
        ``workflow_name``, ``step``, ``seq``, ``at`` and the entry's data), its ``id:`` the
        entry's ``seq``, which ``Last-Event-ID`` resumes after."""
        await run_in_threadpool(engine.get, instance_id)  # 404 before streaming
        return await stream.event_stream(engine, instance_id, last_event_id)

    @api.get(
        "/stream",
        summary="Stream every instance's events",
        response_class=EventSourceResponse,
        responses=SSE,
    )
    async def all_streams(
        workflow: Annotated[str | None, Query(description="Only this workflow.")] = None,
        last_event_id: LastEventId = None,
    ) -> EventSourceResponse:
        """Every instance's history entries as they are written, by any process, in the order
        they were written: as the instance stream, but the ``id:`` is a position in the whole
        history, which ``Last-Event-ID`` resumes after."""
        if workflow is None:
            return await stream.event_stream(engine, None, last_event_id)
        return await stream.event_stream(
            engine, None, last_event_id, lambda e: e.workflow_name == workflow
        )

    return api
