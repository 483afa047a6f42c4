"""Builder twin of ``definitions/kyc-check.yaml``: two checks in parallel."""

from __future__ import annotations

from statemachine.definition.builder import branch, workflow
from statemachine.definition.models import WorkflowDefinition

PERSON = {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
IDENTITY = {
    "type": "object",
    "required": ["identity"],
    "properties": {"identity": {"type": "string"}},
}
SANCTIONS = {
    "type": "object",
    "required": ["sanctions"],
    "properties": {"sanctions": {"type": "string"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow("kyc-check", input_schema=PERSON, version="1", title="KYC check")
        .parallel(
            "checks",
            branches=[
                branch("identity")
                .task("verify-identity", "verifyIdentity", output_schema=IDENTITY)
                .build(),
                branch("sanctions")
                .task("screen-sanctions", "screenSanctions", output_schema=SANCTIONS)
                .build(),
            ],
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
