"""Builder twin of ``definitions/trip-booking.yaml``: a saga whose bookings are undone on failure."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition


def build() -> WorkflowDefinition:
    return (
        workflow("trip-booking", version="1", title="Trip booking (saga)")
        .task(
            "book-hotel", "bookHotel", input={"city": "${{ input.city }}"}, compensate="cancelHotel"
        )
        .task(
            "book-flight",
            "bookFlight",
            input={"to": "${{ input.city }}"},
            compensate="cancelFlight",
        )
        .task(
            "charge",
            "chargePayment",
            input={"amount": "${{ input.amount }}"},
            retry={"max_attempts": 3, "interval": "1s"},  # YAML: maxRetries: 2, retryDelay: 1s
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
