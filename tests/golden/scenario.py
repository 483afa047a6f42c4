"""The golden scenario: instances of every step type, stopped mid-flight, then driven to the end.

``record`` (``python -m tests.golden.record``) runs the first half on a fresh SQLite file and
stores every row of the database in ``states.json`` together with how each instance ends after
the second half. ``test_golden.py`` loads those rows into a fresh database of today's schema
(SQLite and Postgres), runs the second half with today's code, and compares the endings: a change
to the stored state's format, or to the meaning of a stored history, that cannot resume what an
earlier release left mid-flight fails the build (Temporal's replayer tests do the same).

Everything is deterministic: fixed instance ids, a ManualClock, actions that compute from their
input and a per-step counter.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from statemachine import Engine, RetryPolicy, WorkflowDefinition, branch, workflow

START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


class GoldenActions:
    """Deterministic actions; ``flaky`` fails its first two calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def double(self, data: Any) -> Any:
        self.calls["double"] += 1
        n = data.get("n", 1) if isinstance(data, dict) else 1
        return {"n": n * 2}

    def flaky(self, data: Any) -> Any:
        self.calls["flaky"] += 1
        if self.calls["flaky"] <= 2:
            raise RuntimeError(f"flaky call {self.calls['flaky']}")
        return {"ok": True}

    def ready(self, data: Any) -> Any:
        self.calls["ready"] += 1
        return {"done": self.calls["ready"] >= 3, "result": {"checks": self.calls["ready"]}}

    def count(self, data: Any) -> Any:
        self.calls["count"] += 1
        return {"count": self.calls["count"]}

    def tag(self, data: Any) -> Any:
        return {"tagged": data}

    def book(self, data: Any) -> Any:
        return {"booked": True}

    def unbook(self, data: Any) -> Any:
        return {"unbooked": True}

    def refuse(self, data: Any) -> Any:
        raise RuntimeError("refused")


def definitions() -> list[WorkflowDefinition]:
    retry = RetryPolicy(max_attempts=8, interval="1m", backoff_rate=1, max_interval="1m")
    return [
        workflow("g-sequence")
        .task("first", "double")
        .wait("nap", duration="1h")
        .task("second", "double")
        .build(),
        workflow("g-retry").task("call", "flaky", retry=retry).task("after", "double").build(),
        workflow("g-choice")
        .task("first", "double")
        .choice("pick", choices=[{"condition": "first.n > 3", "next": "big"}], default="small")
        .pass_("small", result={"size": "small"}, end=True)
        .pass_("big", result={"size": "big"}, end=True)
        .build(),
        workflow("g-parallel")
        .parallel(
            "both",
            branches=[
                branch("left").task("l", "double").wait("l-wait", duration="2h").build(),
                branch("right").task("r", "tag").build(),
            ],
        )
        .task("join", "tag")
        .build(),
        workflow("g-event").wait("hold", event="go", timeout="1d").task("then", "tag").build(),
        workflow("g-poll").poll("ready", check="ready", interval="10m", max_attempts=10).build(),
        workflow("g-loop")
        .task("count", "count")
        .loop(
            "again", condition="count.count < 3", target="count", interval="30m", max_iterations=10
        )
        .build(),
        workflow("g-map")
        .map(
            "each",
            items="input['items']",
            iterator=branch("item").task("t", "tag").wait("w", duration="1h").build(),
            max_concurrency=2,
        )
        .build(),
        workflow("g-dag")
        .task("a", "double")
        .task("b", "refuse", depends_on=["a"], on_error="continue")
        .task("c", "double", depends_on=["a"])
        .wait("d", duration="1h", depends_on=["c"])
        .task("e", "tag", depends_on=["b", "d"], trigger="all_done")
        .build(),
        workflow("g-child").wait("settle", duration="1d").task("done", "double").build(),
        workflow("g-parent").subworkflow("child", workflow="g-child").task("then", "tag").build(),
        workflow("g-saga")
        .task("book", "book", compensate="unbook")
        .wait("hold", duration="1h")
        .task("charge", "refuse")
        .build(),
    ]


INPUTS: dict[str, Any] = {
    "g-sequence": {"n": 1},
    "g-retry": {"n": 1},
    "g-choice": {"n": 1},
    "g-parallel": {"n": 3},
    "g-event": {},
    "g-poll": {},
    "g-loop": {},
    "g-map": {"items": ["a", "b", "c"]},
    "g-dag": {"n": 2},
    "g-parent": {"n": 5},
    "g-saga": {},
}


def engine_for(url: str, clock: Any) -> tuple[Engine, GoldenActions]:
    engine = Engine(url, clock=clock)
    actions = GoldenActions()
    engine.register_actions(actions)
    engine.register(definitions())
    return engine, actions


def first_half(engine: Engine, clock: Any) -> None:
    """Start one instance of each and drive it part of the way: each stops mid-flight."""
    for name, data in INPUTS.items():
        engine.start(name, data, instance_id=f"golden-{name}")
    engine.run_due()
    clock.advance("1m")  # one retry of g-retry, one more poll wait
    engine.run_due()


def second_half(engine: Engine, clock: Any) -> None:
    """What happens after the restart: time passes in steps, one event arrives."""
    for hour in range(30):
        clock.advance("1h")
        if hour == 2:
            engine.send_event("golden-g-event", "go", {"went": True})
        engine.run_due()


def endings(engine: Engine) -> dict[str, Any]:
    """How each instance ended: status, output, every step's status and output, history types."""
    out: dict[str, Any] = {}
    for name in INPUTS:
        inst = engine.get(f"golden-{name}")
        out[name] = {
            "status": inst.status,
            "output": inst.output,
            "steps": {p: [r.status, r.output] for p, r in sorted(inst.step_results.items())},
        }
    return out
