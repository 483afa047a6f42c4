"""Builder twin of ``definitions/account-opening.yaml``: a subworkflow step."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow("account-opening", version="1", title="Account opening")
        .task("create-account", "upsertCrmContact")
        .subworkflow("verify", workflow="kyc-check", input={"email": "${{ input.email }}"})
        .task(
            "welcome", "sendEmail", input={"to": "${{ input.email }}", "template": "account-ready"}
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
