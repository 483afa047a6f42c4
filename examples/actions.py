"""Handlers for the workflows in ``definitions/``: what a small shop would plug in.

They are deterministic stand-ins for real services (payments, stock, mail) so the examples run
anywhere; each uses ``ctx.idempotency_key`` the way a real side effect should.
"""

from __future__ import annotations

from typing import Any

from statemachine import CriticalError, StepContext


class ShopActions:
    """Registered with ``engine.register_actions(ShopActions())``: each method is an action."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []

    def validateOrder(self, data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if not data.get("order_id"):
            raise CriticalError("an order needs an order_id")
        return {"order_id": data["order_id"], "valid": True, "in_stock": True}

    def reserveInventory(self, data: dict[str, Any]) -> dict[str, Any]:
        items = data.get("items") or []
        return {"reserved": len(items)}

    def chargePayment(self, data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        # the idempotency key makes a re-run after a crash charge once, not twice
        charge = self.charges.setdefault(
            ctx.idempotency_key,
            {"charge_id": f"ch_{len(self.charges) + 1}", "amount": data.get("amount")},
        )
        return charge

    def fulfillOrder(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"shipment": f"sh-{data['order_id']}"}

    def sendOrderConfirmation(self, data: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(data)
        return {"sent_to": data.get("email")}
