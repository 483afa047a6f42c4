"""Builder twin of ``definitions/order-processing.yaml``: a plain sequence with a retried charge."""

from __future__ import annotations

from statemachine.definition.builder import workflow
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
PAYMENT = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
}
CHARGED = {
    "type": "object",
    "required": ["charge_id", "amount"],
    "properties": {"charge_id": {"type": "string"}, "amount": {"type": "number"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow(
            "order-processing",
            input_schema=ORDER,
            version="1",
            title="Order processing",
            description="Validate an order, reserve stock, charge the card, ship it and tell the customer.",
        )
        .task(
            "validate",
            "validateOrder",
            input_schema=ORDER_ID,
            output_schema=VALIDATED,
            input={"order_id": "${{ input.order_id }}"},
        )
        .task("reserve", "reserveInventory", input={"items": "${{ input.items }}"})
        .task(
            "charge",
            "chargePayment",
            input_schema=PAYMENT,
            output_schema=CHARGED,
            input={"order_id": "${{ input.order_id }}", "amount": "${{ input.amount }}"},
            retry={"max_attempts": 4, "interval": "1s"},  # YAML: maxRetries: 3, retryDelay: 1s
        )
        .task("fulfill", "fulfillOrder", input={"order_id": "${{ input.order_id }}"})
        .task(
            "notify",
            "sendOrderConfirmation",
            input={
                "email": "${{ input.email }}",
                "subject": "Order ${{ input.order_id }} is on its way",
            },
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
