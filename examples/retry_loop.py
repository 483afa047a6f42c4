"""Builder twin of ``definitions/retry-loop.yaml``: fetch and process pages while there are more."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

SOURCE = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
PAGE = {
    "type": "object",
    "required": ["page", "items", "has_more"],
    "properties": {
        "page": {"type": "integer"},
        "items": {"type": "array", "items": {"type": "integer"}},
        "has_more": {"type": "boolean"},
    },
}
ITEMS = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}
PROCESSED = {
    "type": "object",
    "required": ["processed"],
    "properties": {"processed": {"type": "integer"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow("retry-loop", input_schema=SOURCE, version="1", title="Paginated fetch")
        .task("fetch", "fetchPage", output_schema=PAGE, input={"url": "${{ input.url }}"})
        .task("process", "processPage", input_schema=ITEMS, output_schema=PROCESSED)
        .loop("more-pages", condition="fetch.has_more == true", target="fetch", max_iterations=100)
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
