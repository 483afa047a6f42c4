"""Waiting for a person: an email-verification step that waits for an external event.

    python examples/events.py [DB_URL]

The event is sent before the instance reaches the wait, and is still delivered: ``send_event``
writes to a durable inbox.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statemachine import Engine, workflow
from statemachine.testing import ManualClock

signup = (
    workflow("signup")
    .task("create-account", lambda user: {"user_id": f"u-{user['email']}"})
    .wait("email-verified", event="emailVerified", timeout="7d")
    .pass_(
        "activate", transform=lambda ctx: {"active": True, "verified_at": ctx.prev["at"]}, end=True
    )
    .build()
)


def main(url: str | None = None) -> int:
    clock = ManualClock()
    engine = Engine(url or f"sqlite:///{tempfile.mkdtemp()}/events.db", clock=clock)
    engine.register(signup)
    iid = engine.start("signup", {"email": "ada@example.com"})
    engine.send_event(
        iid, "emailVerified", {"at": "2030-01-01T10:00:00Z"}
    )  # early: kept in the inbox
    engine.run_due()
    inst = engine.get(iid)
    print(f"{iid}: {inst.status} -> {inst.output}")
    engine.close()
    return 0 if inst.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
