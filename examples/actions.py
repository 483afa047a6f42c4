"""Handlers for the workflows in ``definitions/``: what a small shop would plug in.

They are deterministic stand-ins for real services (payments, stock, mail) so the examples run
anywhere; each uses ``ctx.idempotency_key`` the way a real side effect should.
"""

from __future__ import annotations

from typing import Any

from statemachine import CriticalError, StepContext

#: items the shop has run out of: an order for one of them is backordered
SOLD_OUT = frozenset({"globe"})


class ShopActions:
    """Registered with ``engine.register_actions(ShopActions())``: each method is an action."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []

    def validateOrder(self, data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if not data.get("order_id"):
            raise CriticalError("an order needs an order_id")
        in_stock = not SOLD_OUT.intersection(data.get("items") or [])
        return {"order_id": data["order_id"], "valid": True, "in_stock": in_stock}

    def reserveInventory(self, data: dict[str, Any]) -> dict[str, Any]:
        items = data.get("items") or []
        return {"reserved": len(items)}

    def chargePayment(self, data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if float(data.get("amount") or 0) > 10_000:
            raise CriticalError("card declined: over the limit")  # not retried
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

    def shipOrder(self, data: Any) -> dict[str, Any]:
        return {"tracking": "TRK-1", "carrier": "post"}

    def notifyCustomer(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        self.sent.append({"instance": ctx.instance_id, "data": data})
        return {"notified": True}

    def backorderItems(self, data: Any) -> dict[str, Any]:
        return {"backordered": True}

    # fraud check
    def calculateFraudScore(self, data: dict[str, Any]) -> dict[str, Any]:
        amount = float(data.get("amount") or 0) if isinstance(data, dict) else 0.0
        return {"risk": 0.9 if amount > 1000 else 0.1}

    def approvePayment(self, data: Any) -> dict[str, Any]:
        return {"approved": True}

    def queueForReview(self, data: Any) -> dict[str, Any]:
        return {"queued": True}

    # onboarding and customer lifecycle
    def sendEmail(self, data: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(data)
        return {"sent": True, "template": data.get("template") if isinstance(data, dict) else None}

    def upsertCrmContact(self, data: Any) -> dict[str, Any]:
        return {"contact_id": "c-1"}

    def assignAccountManager(self, data: Any) -> dict[str, Any]:
        return {"manager": "grace"}

    # batch job: the job is done on the third check
    def submitBatchJob(self, data: Any) -> dict[str, Any]:
        return {"job_id": "job-1"}

    def checkBatchStatus(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        done = ctx.attempt >= 3
        return {"done": done, "result": {"rows": 1200} if done else None}

    def sendReport(self, data: Any) -> dict[str, Any]:
        return {"reported": data}

    # paginated fetch: three pages, the iteration number comes from the idempotency key
    def fetchPage(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        page = int(ctx.idempotency_key.rsplit("/", 1)[1])
        return {"page": page, "items": [page * 10 + i for i in range(3)], "has_more": page < 2}

    def processPage(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"processed": len(data.get("items", []))}

    # trip booking (a saga): each booking has its undo
    def bookHotel(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"hotel": f"hotel-{data.get('city')}"}

    def cancelHotel(self, booking: dict[str, Any]) -> dict[str, Any]:
        self.sent.append({"cancelled": booking["hotel"]})
        return {"cancelled": booking["hotel"]}

    def bookFlight(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"flight": f"flight-to-{data.get('to')}"}

    def cancelFlight(self, booking: dict[str, Any]) -> dict[str, Any]:
        self.sent.append({"cancelled": booking["flight"]})
        return {"cancelled": booking["flight"]}

    # expense approval
    def submitExpense(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"expense_id": "exp-1", "amount": data.get("amount")}

    def payExpense(self, data: Any) -> dict[str, Any]:
        return {"paid": True}

    # kyc
    def verifyIdentity(self, data: Any) -> dict[str, Any]:
        return {"identity": "verified"}

    def screenSanctions(self, data: Any) -> dict[str, Any]:
        return {"sanctions": "clear"}
