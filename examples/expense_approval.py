"""Builder twin of ``definitions/expense-approval.yaml``: waiting for a person, with a timeout."""

from __future__ import annotations

from statemachine.definition.builder import when, workflow
from statemachine.definition.models import WorkflowDefinition

EXPENSE = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
SUBMITTED = {
    "type": "object",
    "required": ["expense_id", "amount"],
    "properties": {"expense_id": {"type": "string"}, "amount": {"type": "number"}},
}


def build() -> WorkflowDefinition:
    return (
        workflow("expense-approval", input_schema=EXPENSE, version="1", title="Expense approval")
        .task(
            "submit",
            "submitExpense",
            input_schema=EXPENSE,
            output_schema=SUBMITTED,
            input={"amount": "${{ input.amount }}"},
        )
        .wait(
            "decision",
            event="managerDecision",
            timeout="3d",
            on_error="branch",
            error_next="escalate",
        )
        .choice("route", choices=[when("decision.approved == true", next="pay")], default="reject")
        .task("pay", "payExpense", end=True)
        .task("reject", "notifyCustomer", end=True)
        .task("escalate", "notifyCustomer", end=True)
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
