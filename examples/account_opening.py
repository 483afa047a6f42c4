"""Builder twin of ``definitions/account-opening.yaml``: a subworkflow step."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

PERSON = {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
CONTACT = {
    "type": "object",
    "required": ["contact_id"],
    "properties": {"contact_id": {"type": "string"}},
}
EMAIL = {
    "type": "object",
    "required": ["to", "template"],
    "properties": {"to": {"type": "string"}, "template": {"type": "string"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow("account-opening", input_schema=PERSON, version="1", title="Account opening")
        .task("create-account", "upsertCrmContact", output_schema=CONTACT)
        .subworkflow("verify", workflow="kyc-check", input={"email": "${{ input.email }}"})
        .task(
            "welcome",
            "sendEmail",
            input_schema=EMAIL,
            input={"to": "${{ input.email }}", "template": "account-ready"},
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
