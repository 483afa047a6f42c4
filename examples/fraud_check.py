"""Builder twin of ``definitions/fraud-check.yaml``: a DAG where a condition picks one decision."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

PAYMENT = {
    "type": "object",
    "required": ["payment_id", "amount"],
    "properties": {"payment_id": {"type": "string"}, "amount": {"type": "number"}},
}
SCORE = {"type": "object", "required": ["risk"], "properties": {"risk": {"type": "number"}}}


def build() -> WorkflowDefinition:
    return (
        workflow("fraud-check", input_schema=PAYMENT, version="1", title="Fraud check")
        .task(
            "score",
            "calculateFraudScore",
            input_schema=PAYMENT,
            output_schema=SCORE,
            input={"payment_id": "${{ input.payment_id }}", "amount": "${{ input.amount }}"},
        )
        .task("auto-approve", "approvePayment", depends_on=["score"], condition="score.risk < 0.3")
        .task(
            "manual-review", "queueForReview", depends_on=["score"], condition="score.risk >= 0.3"
        )
        # default trigger rule: runs when none failed and at least one succeeded (the other is skipped)
        .task("notify", "notifyCustomer", depends_on=["auto-approve", "manual-review"])
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
