"""Builder twin of ``definitions/kyc-check.yaml``: two checks in parallel."""

from __future__ import annotations

from statemachine.definition.builder import branch, workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow("kyc-check", version="1", title="KYC check")
        .parallel(
            "checks",
            branches=[
                branch("identity").task("verify-identity", "verifyIdentity").build(),
                branch("sanctions").task("screen-sanctions", "screenSanctions").build(),
            ],
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
