"""Request and response bodies of the HTTP API (they document it in OpenAPI too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _unstorable(value: Any) -> bool:
    """Whether a JSON value holds a string no database can store: with a NUL character, or
    not valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON lets a client send).

    Stored, such a value could not be answered again; refused up front, in keys too.
    Iterative: the value may be deeply nested.
    """
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


class _Request(BaseModel):
    # a misspelt key ("inputs") is a 422, not silently ignored
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable_strings(self) -> _Request:
        for name in type(self).model_fields:
            if _unstorable(getattr(self, name)):
                raise ValueError(f"{name} holds a string with a NUL character or a lone surrogate")
        return self


class StartRequest(_Request):
    input: Any = Field(default=None, description="Workflow input (JSON).")
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency: the same id twice names the same instance, started once.",
    )


class EventRequest(_Request):
    name: str = Field(min_length=1, max_length=200, description="Event name.")
    data: Any = Field(default=None, description="Event data (JSON).")


class EmitRequest(EventRequest):
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The same key again starts nothing and answers the same ids "
        "(also the Idempotency-Key header).",
    )


class EventAccepted(BaseModel):
    instance_id: str
    name: str


class Started(BaseModel):
    started: list[str] = Field(description="Ids of the instances the event started.")


WorkerState = Literal["running", "stopped", "failed", "none"]


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        "ok", description="unavailable (with a 503) when the embedded worker is down."
    )
    worker: WorkerState = Field(
        "none",
        description="The worker in the server process: none when the server runs no worker "
        "(serve --no-worker); stopped or failed when it ended or crashed.",
    )


class StreamTicket(BaseModel):
    ticket: str = Field(description="Opens one stream: `?ticket=` on a stream route.")
    expires_in: int = Field(description="Seconds left to use it.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. instance_not_found.")
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


EdgeKind = Literal["next", "error", "back"]


class GraphEdge(BaseModel):
    source: str = Field(description="Step path.")
    target: str = Field(description="Step path.")
    label: str = ""
    kind: EdgeKind = Field(description="next; error (errorBranch); back (a loop going back).")


class GraphNode(BaseModel):
    path: str = Field(description="Step path, the key of step_results.")
    name: str
    kind: str = Field(description="Step type: task, choice, parallel, ...")
    layer: int = Field(description="Row of this step in its scope, from the top.")
    description: str | None = None
    branches: list[GraphScope] = Field(
        default_factory=list, description="A parallel's branches, or a map's iterator."
    )


class GraphScope(BaseModel):
    name: str | None = Field(default=None, description="Branch name (None at the top level).")
    steps: list[GraphNode]
    edges: list[GraphEdge]


class ConcurrencyInfo(BaseModel):
    limit: int = Field(description="At most this many instances run at once (per key value).")
    key: str | None = Field(
        default=None,
        description="A ${{ }} template over the input: instances with one value share the limit.",
    )


class WorkflowInfo(BaseModel):
    name: str
    version: str
    hash: str
    title: str | None = None
    description: str | None = None
    steps: list[str] = Field(description="Every step path, parents before children.")
    triggers: list[str] = Field(description="Event names that start this workflow.")
    schedules: list[str] = Field(
        default=[], description="When it starts by itself: '0 2 * * * (Europe/Paris)'."
    )
    concurrency: ConcurrencyInfo | None = Field(
        default=None, description="Its concurrency limit, if it has one."
    )
    priority: int = Field(default=0, description="Higher is claimed first (start may override).")
    mermaid: str = Field(description="The graph as Mermaid flowchart source.")
    graph: GraphScope = Field(description="The graph with a layout hint, for drawing.")


GraphNode.model_rebuild()
