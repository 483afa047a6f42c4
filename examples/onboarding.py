"""Builder twin of ``definitions/onboarding.yaml``: two emails three days apart, durably."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

USER = {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
EMAIL = {
    "type": "object",
    "required": ["to", "template"],
    "properties": {"to": {"type": "string"}, "template": {"type": "string"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow("onboarding", input_schema=USER, version="1", title="User onboarding")
        .task(
            "welcome",
            "sendEmail",
            input_schema=EMAIL,
            input={"to": "${{ input.email }}", "template": "welcome"},
        )
        .wait("wait-3-days", duration="3d")
        .task(
            "tips",
            "sendEmail",
            input_schema=EMAIL,
            input={"to": "${{ input.email }}", "template": "tips"},
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
