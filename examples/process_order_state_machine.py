"""Builder twin of ``definitions/process-order-state-machine.yaml``: choice, parallel, next/end."""

from __future__ import annotations

from statemachine.definition.builder import branch, when, workflow
from statemachine.definition.models import WorkflowDefinition

ORDER = {
    "type": "object",
    "required": ["order_id", "amount", "email"],
    "properties": {
        "order_id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "string"}},
        "amount": {"type": "number"},
        "email": {"type": "string"},
    },
}
ORDER_ID = {
    "type": "object",
    "required": ["order_id"],
    "properties": {"order_id": {"type": "string"}},
}
VALIDATED = {
    "type": "object",
    "required": ["order_id", "valid", "in_stock"],
    "properties": {
        "order_id": {"type": "string"},
        "valid": {"type": "boolean"},
        "in_stock": {"type": "boolean"},
    },
}


def build() -> WorkflowDefinition:
    return (
        workflow(
            "process-order-state-machine",
            input_schema=ORDER,
            version="1",
            title="Process order (state machine)",
        )
        .timeout("1h")
        .default_retry(max_attempts=3, interval="1s", backoff_rate=2, max_interval="30s")
        .task("validate", "validateOrder", input_schema=ORDER_ID, output_schema=VALIDATED)
        .choice(
            "check-stock",
            choices=[when("validate.in_stock == true", next="fulfill")],
            default="backorder",
        )
        .parallel(
            "fulfill",
            branches=[
                branch("shipping").task("ship", "shipOrder").build(),
                branch("notification")
                .task("notify", "notifyCustomer", input={"order_id": "${{ input.order_id }}"})
                .build(),
            ],
            next="complete",
        )
        .task("backorder", "backorderItems", next="complete")
        .pass_("complete", end=True)
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
