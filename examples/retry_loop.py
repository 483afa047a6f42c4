"""Builder twin of ``definitions/retry-loop.yaml``: fetch and process pages while there are more."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow("retry-loop", version="1", title="Paginated fetch")
        .task("fetch", "fetchPage", input={"url": "${{ input.url }}"})
        .task("process", "processPage")
        .loop("more-pages", condition="fetch.has_more == true", target="fetch", max_iterations=100)
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
