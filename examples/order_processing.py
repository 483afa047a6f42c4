"""Builder twin of ``definitions/order-processing.yaml``: a plain sequence with a retried charge."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow(
            "order-processing",
            version="1",
            title="Order processing",
            description="Validate an order, reserve stock, charge the card, ship it and tell the customer.",
        )
        .task("validate", "validateOrder", input={"order_id": "${{ input.order_id }}"})
        .task("reserve", "reserveInventory", input={"items": "${{ input.items }}"})
        .task(
            "charge",
            "chargePayment",
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
