"""Builder twin of ``definitions/customer-lifecycle.yaml``: a workflow started by events."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow("customer-lifecycle", version="1", title="Customer lifecycle")
        .trigger("Customer.created")
        .trigger("Customer.upgraded", condition='plan === "enterprise"')
        .task(
            "create-crm-record",
            "upsertCrmContact",
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
