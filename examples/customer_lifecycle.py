"""Builder twin of ``definitions/customer-lifecycle.yaml``: a workflow started by events."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

CUSTOMER = {
    "type": "object",
    "required": ["email", "plan"],
    "properties": {
        "email": {"type": "string"},
        "name": {"type": "string"},
        "plan": {"type": "string"},
    },
}
CONTACT = {
    "type": "object",
    "required": ["contact_id"],
    "properties": {"contact_id": {"type": "string"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow(
            "customer-lifecycle", input_schema=CUSTOMER, version="1", title="Customer lifecycle"
        )
        .trigger("Customer.created")
        .trigger("Customer.upgraded", condition='plan === "enterprise"')
        .task(
            "create-crm-record",
            "upsertCrmContact",
            output_schema=CONTACT,
            input={"email": "${{ input.email }}", "plan": "${{ input.plan }}"},
        )
        .task(
            "greet",
            "sendEmail",
            input={"to": "${{ input.email }}", "subject": "Welcome aboard, ${{ input.name }}"},
        )
        .task(
            "assign-account-manager",
            "assignAccountManager",
            input={"email": "${{ input.email }}", "tier": "${{ input.plan }}"},
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
