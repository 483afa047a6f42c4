"""Builder twin of ``definitions/newsletter.yaml``: a map over the recipients."""

from __future__ import annotations

from statemachine.definition.builder import branch, workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    send = branch("recipient").task(
        "send", "sendEmail", input={"to": "${{ item }}", "template": "newsletter"}
    )
    return (
        workflow("newsletter", version="1", title="Newsletter fan-out")
        .map("send-all", items="input.recipients", iterator=send.build(), max_concurrency=5)
        .task("report", "sendReport")
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
