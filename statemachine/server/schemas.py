"""Request and response bodies of the HTTP API (they document it in OpenAPI too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    # a misspelt key ("inputs") is a 422, not silently ignored
    model_config = ConfigDict(extra="forbid")


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


class EventAccepted(BaseModel):
    instance_id: str
    name: str


class Started(BaseModel):
    started: list[str] = Field(description="Ids of the instances the event started.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


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


class WorkflowInfo(BaseModel):
    name: str
    version: str
    hash: str
    title: str | None = None
    description: str | None = None
    steps: list[str] = Field(description="Every step path, parents before children.")
    triggers: list[str] = Field(description="Event names that start this workflow.")
    mermaid: str = Field(description="The graph as Mermaid flowchart source.")
    graph: GraphScope = Field(description="The graph with a layout hint, for drawing.")


GraphNode.model_rebuild()
