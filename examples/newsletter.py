"""Builder twin of ``definitions/newsletter.yaml``: a map over the recipients."""

from __future__ import annotations

from statemachine.definition.builder import branch, workflow
from statemachine.definition.models import WorkflowDefinition

AUDIENCE = {
    "type": "object",
    "required": ["recipients"],
    "properties": {"recipients": {"type": "array", "items": {"type": "string"}}},
}
EMAIL = {
    "type": "object",
    "required": ["to", "template"],
    "properties": {"to": {"type": "string"}, "template": {"type": "string"}},
}
SENT = {
    "type": "object",
    "required": ["sent", "template"],
    "properties": {"sent": {"type": "boolean"}, "template": {"type": "string"}},
}
SENT_ALL = {
    "type": "array",
    "items": {"type": "object", "required": ["sent"], "properties": {"sent": {"type": "boolean"}}},
}


def build() -> WorkflowDefinition:
    send = branch("recipient").task(
        "send",
        "sendEmail",
        input_schema=EMAIL,
        output_schema=SENT,
        input={"to": "${{ item }}", "template": "newsletter"},
    )
    return (
        workflow("newsletter", input_schema=AUDIENCE, version="1", title="Newsletter fan-out")
        .map("send-all", items="input.recipients", iterator=send.build(), max_concurrency=5)
        .task("report", "sendReport", input_schema=SENT_ALL)
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
