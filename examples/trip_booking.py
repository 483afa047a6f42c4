"""Builder twin of ``definitions/trip-booking.yaml``: a saga whose bookings are undone on failure."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

TRIP = {
    "type": "object",
    "required": ["city", "amount"],
    "properties": {"city": {"type": "string"}, "amount": {"type": "number"}},
}
HOTEL = {"type": "object", "required": ["hotel"], "properties": {"hotel": {"type": "string"}}}
FLIGHT = {"type": "object", "required": ["flight"], "properties": {"flight": {"type": "string"}}}
AMOUNT = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}


def build() -> WorkflowDefinition:
    return (
        workflow("trip-booking", input_schema=TRIP, version="1", title="Trip booking (saga)")
        .task(
            "book-hotel",
            "bookHotel",
            output_schema=HOTEL,
            input={"city": "${{ input.city }}"},
            compensate="cancelHotel",
        )
        .task(
            "book-flight",
            "bookFlight",
            output_schema=FLIGHT,
            input={"to": "${{ input.city }}"},
            compensate="cancelFlight",
        )
        .task(
            "charge",
            "chargePayment",
            input_schema=AMOUNT,
            input={"amount": "${{ input.amount }}"},
            retry={"max_attempts": 3, "interval": "1s"},  # YAML: maxRetries: 2, retryDelay: 1s
        )
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
