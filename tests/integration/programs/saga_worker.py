"""A process the saga crash test SIGKILLs while it compensates: ``python saga_worker.py DB_URL MARKER_DIR``.

``book-trip`` books a hotel, then a flight, then charges a card that is declined; the flight's
compensation writes its marker and hangs on its first run, so the test can kill the process in
the middle of compensating. ``setup`` is imported by the test to recover with a new engine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from statemachine import CriticalError, Engine, StepContext, workflow

INSTANCE = "trip-1"


def mark(marker_dir: Path, name: str) -> int:
    """Append ``name`` to the run log and return how often it ran before."""
    log = marker_dir / "log.txt"
    before = log.read_text().split() if log.exists() else []
    with log.open("a") as f:
        f.write(name + "\n")
        f.flush()
    return before.count(name)


def setup(engine: Engine, marker_dir: Path, *, hang: bool) -> None:
    def book_hotel(data: Any) -> dict[str, Any]:
        mark(marker_dir, "book-hotel")
        return {"hotel": "h-1"}

    def book_flight(data: Any) -> dict[str, Any]:
        mark(marker_dir, "book-flight")
        return {"flight": "f-1"}

    def charge(data: Any) -> dict[str, Any]:
        mark(marker_dir, "charge")
        raise CriticalError("card declined")

    def cancel_hotel(output: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        mark(marker_dir, f"cancel-hotel:{output['hotel']}")
        return {"cancelled": output["hotel"]}

    def cancel_flight(output: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        runs = mark(marker_dir, f"cancel-flight:{output['flight']}")
        if hang and runs == 0:
            time.sleep(600)  # the test SIGKILLs us here
        return {"cancelled": output["flight"]}

    engine.register(
        workflow("book-trip")
        .task("hotel", book_hotel, compensate=cancel_hotel)
        .task("flight", book_flight, compensate=cancel_flight)
        .task("charge", charge)
        .build()
    )


if __name__ == "__main__":
    url, folder = sys.argv[1], Path(sys.argv[2])
    engine = Engine(url, lease="1s")
    setup(engine, folder, hang=True)
    engine.execute("book-trip", {}, instance_id=INSTANCE)
