"""Parallel steps on real databases: concurrency, outputs and paths, race, fail-fast and wait-all.

Only the public surface is used. Timing checks compare the handlers' own start and end times
(``time.perf_counter``) against their sleeps: they check concurrency, not speed.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import Engine, StepContext, WorkflowDefinition, branch, load_yaml, workflow
from statemachine.testing import ManualClock

SLEEP = 0.5
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the real clock: handlers really sleep."""
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


class Spans:
    """Records (start, end) of every handler call, from any thread."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def record(self, name: str, start: float) -> None:
        with self.lock:
            self.spans[name] = (start, time.perf_counter())

    @property
    def elapsed(self) -> float:
        starts = [s for s, _ in self.spans.values()]
        ends = [e for _, e in self.spans.values()]
        return max(ends) - min(starts)

    def async_sleeper(self, name: str) -> Callable[..., Any]:
        async def handler(data: Any, ctx: StepContext) -> str:
            start = time.perf_counter()
            await asyncio.sleep(SLEEP)
            self.record(name, start)
            return f"{name}-done"

        return handler

    def sync_sleeper(self, name: str) -> Callable[..., Any]:
        def handler(data: Any, ctx: StepContext) -> str:
            start = time.perf_counter()
            time.sleep(SLEEP)
            self.record(name, start)
            return f"{name}-done"

        return handler


def _two_branches(
    name: str, make: Callable[[str], Callable[..., Any]], max_concurrency: int | None = None
) -> Any:
    return (
        workflow(name)
        .parallel(
            "fulfill",
            branches=[
                branch("shipping").task("ship", make("ship")).build(),
                branch("notification").task("notify", make("notify")).build(),
            ],
            max_concurrency=max_concurrency,
        )
        .build()
    )


# -- mode="all" ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_branches_run_concurrently(engine: Engine, kind: str) -> None:
    spans = Spans()
    make = spans.async_sleeper if kind == "async" else spans.sync_sleeper
    engine.register(_two_branches("fan-out", make))

    inst = engine.execute("fan-out", {"order": 1})

    assert inst.status == "completed"
    assert set(spans.spans) == {"ship", "notify"}
    assert spans.elapsed < 0.9, f"branches ran one after the other ({spans.elapsed:.2f}s)"
    assert inst.output == {"shipping": "ship-done", "notification": "notify-done"}
    assert inst.step_results["fulfill"].output == inst.output
    assert inst.step_results["fulfill"].status == "completed"
    for path in ("fulfill/shipping/ship", "fulfill/notification/notify"):
        assert inst.step_results[path].status == "completed"
    assert inst.step_results["fulfill/shipping/ship"].output == "ship-done"
    assert inst.step_results["fulfill/notification/notify"].output == "notify-done"


def test_max_concurrency_one_runs_branches_one_after_the_other(engine: Engine) -> None:
    spans = Spans()
    engine.register(_two_branches("fan-serial", spans.async_sleeper, max_concurrency=1))

    inst = engine.execute("fan-serial", {})

    assert inst.status == "completed"
    assert spans.elapsed >= 2 * SLEEP
    (_, first_end), (second_start, _) = sorted(spans.spans.values())
    assert second_start >= first_end  # no overlap at all
    assert inst.output == {"shipping": "ship-done", "notification": "notify-done"}


def test_branch_output_is_its_last_step_and_the_branch_input_is_prev(engine: Engine) -> None:
    engine.register(
        workflow("chain")
        .task("prepare", lambda x: {"n": x["n"] + 1})
        .parallel(
            "fork",
            branches=[
                branch("double")
                .task("first", lambda x: x["n"] * 2)
                .task("second", lambda x: x + 100)
                .build(),
                branch("same").task("echo", lambda x: x).build(),
            ],
        )
        .pass_("after", transform=lambda ctx: ctx.prev)
        .build()
    )
    inst = engine.execute("chain", {"n": 1})
    assert inst.status == "completed"
    assert inst.output == {"double": 104, "same": {"n": 2}}
    assert inst.step_results["fork/double/first"].output == 4
    assert inst.step_results["fork/double/second"].output == 104


def test_ctx_steps_in_a_branch_sees_its_own_steps_first(engine: Engine) -> None:
    seen: dict[str, dict[str, Any]] = {}

    def look(name: str) -> Callable[..., Any]:
        def handler(data: Any, ctx: StepContext) -> str:
            seen[name] = dict(ctx.steps)
            return name

        return handler

    engine.register(
        workflow("scopes")
        .task("shared", lambda x: "outer")
        .task("top-only", lambda x: "top")
        .parallel(
            "fork",
            branches=[
                branch("left")
                .task("shared", lambda x: "inner-left")
                .task("look", look("left"))
                .build(),
                branch("right").task("look", look("right")).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("scopes", {})
    assert inst.status == "completed"
    # the branch's own "shared" shadows the enclosing one
    assert seen["left"]["shared"] == "inner-left"
    assert seen["left"]["top-only"] == "top"
    # a branch without its own "shared" sees the enclosing scope's
    assert seen["right"]["shared"] == "outer"
    assert seen["right"]["top-only"] == "top"
    # nothing of a sibling branch leaks in
    assert "look" not in seen["right"] or seen["right"]["look"] != "left"
    assert inst.step_results["shared"].output == "outer"
    assert inst.step_results["fork/left/shared"].output == "inner-left"


# -- mode="race" ---------------------------------------------------------------------------


def test_race_cancels_the_loser(engine: Engine) -> None:
    finished: list[str] = []

    async def slow(data: Any) -> str:
        await asyncio.sleep(0.6)
        finished.append("slow")
        return "slow"

    async def fast(data: Any) -> str:
        await asyncio.sleep(0.05)
        return "fast"

    engine.register(
        workflow("racer")
        .parallel(
            "race",
            mode="race",
            branches=[
                branch("tortoise").task("crawl", slow).build(),
                branch("hare").task("run", fast).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("racer", {})
    assert inst.status == "completed"
    assert inst.output == {"winner": "hare", "value": "fast"}
    assert inst.step_results["race/hare/run"].status == "completed"
    assert inst.step_results["race/tortoise/crawl"].status == "cancelled"
    time.sleep(0.9)  # longer than the loser's sleep: had it not been cancelled it would finish
    assert finished == []
    inst = engine.get(inst.id)
    assert inst.step_results["race/tortoise/crawl"].status == "cancelled"
    assert inst.status == "completed"


def _failover(primary: Callable[..., Any], backup: Callable[..., Any]) -> WorkflowDefinition:
    return (
        workflow("failover")
        .parallel(
            "call",
            mode="race",
            branches=[
                branch("primary").task("ask", primary).build(),
                branch("backup").task("ask", backup).build(),
            ],
        )
        .task("use", lambda data: data["value"])
        .build()
    )


def test_race_primary_fails_backup_wins(engine: Engine) -> None:
    async def primary(data: Any) -> str:
        raise ConnectionError("primary down")

    async def backup(data: Any) -> str:
        await asyncio.sleep(0.2)  # the primary fails first: the race goes on
        return "from backup"

    engine.register(_failover(primary, backup))
    inst = engine.execute("failover", {})
    assert inst.status == "completed", inst.error
    assert inst.output == "from backup"
    assert inst.step_results["call"].output == {"winner": "backup", "value": "from backup"}
    assert inst.step_results["call/primary/ask"].status == "failed"
    assert inst.step_results["call/backup/ask"].status == "completed"


def test_race_that_every_branch_loses_fails_with_every_error(engine: Engine) -> None:
    async def primary(data: Any) -> str:
        raise ConnectionError("primary down")

    async def backup(data: Any) -> str:
        await asyncio.sleep(0.2)
        raise ConnectionError("backup down")

    engine.register(_failover(primary, backup))
    inst = engine.execute("failover", {})
    assert inst.status == "failed"
    assert inst.error is not None
    assert inst.error["type"] == "RaceError"
    assert inst.error["step"] == "call"
    assert [e["message"] for e in inst.error["errors"]] == ["primary down", "backup down"]
    assert [e["step"] for e in inst.error["errors"]] == ["call/primary/ask", "call/backup/ask"]
    assert "use" not in inst.step_results


# -- failures ------------------------------------------------------------------------------


def test_fail_fast_cancels_the_other_branches(engine: Engine) -> None:
    finished: list[str] = []

    async def slow(data: Any) -> str:
        await asyncio.sleep(0.6)
        finished.append("slow")
        return "slow"

    async def broken(data: Any) -> None:
        await asyncio.sleep(0.05)
        raise ValueError("card declined")

    engine.register(
        workflow("ff")
        .parallel(
            "fan",
            failure="fail-fast",
            branches=[
                branch("pay").task("charge", broken).build(),
                branch("ship").task("pack", slow).build(),
            ],
        )
        .task("after", lambda x: "never")
        .build()
    )
    start = time.perf_counter()
    inst = engine.execute("ff", {})
    took = time.perf_counter() - start
    assert inst.status == "failed"
    assert took < 0.6, "the failing branch should not wait for the slow one"
    assert inst.step_results["fan"].status == "failed"
    assert inst.step_results["fan/pay/charge"].status == "failed"
    assert inst.step_results["fan/ship/pack"].status == "cancelled"
    assert "after" not in inst.step_results
    assert inst.error is not None and "card declined" in str(inst.error["message"])
    time.sleep(0.8)
    assert finished == []


def test_wait_all_lets_the_others_finish_then_fails_with_every_error(engine: Engine) -> None:
    finished: list[str] = []

    async def slow(data: Any) -> str:
        await asyncio.sleep(0.3)
        finished.append("slow")
        return "slow"

    def broken(message: str) -> Callable[..., Any]:
        def handler(data: Any) -> None:
            raise ValueError(message)

        return handler

    engine.register(
        workflow("wa")
        .parallel(
            "fan",
            failure="wait-all",
            branches=[
                branch("pay").task("charge", broken("card declined")).build(),
                branch("ship").task("pack", slow).build(),
                branch("mail").task("send", broken("smtp down")).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("wa", {})
    assert inst.status == "failed"
    assert finished == ["slow"]
    assert inst.step_results["fan/ship/pack"].status == "completed"
    assert inst.step_results["fan/ship/pack"].output == "slow"
    assert inst.step_results["fan/pay/charge"].status == "failed"
    assert inst.step_results["fan/mail/send"].status == "failed"
    fan = inst.step_results["fan"]
    assert fan.status == "failed"
    assert fan.error is not None
    messages = sorted(str(e["message"]) for e in fan.error["errors"])
    assert messages == ["card declined", "smtp down"]
    assert inst.error is not None


def test_max_concurrency_bounds_how_many_branches_overlap(engine: Engine) -> None:
    running = {"now": 0, "peak": 0}

    async def handler(data: Any) -> int:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.15)
        running["now"] -= 1
        return 1

    engine.register(
        workflow("bounded")
        .parallel(
            "fan",
            max_concurrency=3,
            branches=[branch(f"b{i}").task("t", handler).build() for i in range(9)],
        )
        .build()
    )
    inst = engine.execute("bounded", {})
    assert inst.status == "completed"
    assert running["peak"] == 3
    assert inst.output == {f"b{i}": 1 for i in range(9)}


def test_nested_parallel_sees_every_enclosing_scope(engine: Engine) -> None:
    seen: dict[str, Any] = {}

    def look(data: Any, ctx: StepContext) -> str:
        seen.update(ctx.steps)
        return "looked"

    engine.register(
        workflow("nested")
        .task("top", lambda x: "T")
        .parallel(
            "outer",
            branches=[
                branch("o")
                .task("mid", lambda x: "M")
                .parallel(
                    "inner",
                    branches=[
                        branch("i").task("top", lambda x: "shadow").task("look", look).build()
                    ],
                )
                .build()
            ],
        )
        .build()
    )
    inst = engine.execute("nested", {})
    assert inst.status == "completed"
    assert seen["top"] == "shadow"  # the innermost scope wins
    assert seen["mid"] == "M"  # the middle scope is visible
    assert inst.step_results["outer/o/inner/i/look"].output == "looked"
    assert inst.output == {"o": {"i": "looked"}}


def test_branch_timers_survive_a_new_engine(db_url: str) -> None:
    clock = ManualClock(START)
    calls: Counter[str] = Counter()

    def step(name: str) -> Callable[..., Any]:
        def handler(data: Any) -> str:
            calls[name] += 1
            return name

        return handler

    def flow() -> WorkflowDefinition:
        return (
            workflow("branch-timers")
            .parallel(
                "fan",
                branches=[
                    branch("a")
                    .task("a1", step("a1"))
                    .wait("w", duration="1h")
                    .task("a2", step("a2"))
                    .build(),
                    branch("b")
                    .task("b1", step("b1"))
                    .wait("w", duration="2h")
                    .task("b2", step("b2"))
                    .build(),
                ],
            )
            .build()
        )

    engine = Engine(db_url, clock=clock)
    try:
        engine.register(flow())
        iid = engine.execute("branch-timers", {}).id
        assert engine.get(iid).status == "waiting"
    finally:
        engine.close()
        gc.collect()
    for hour in (1, 2):
        engine = Engine(db_url, clock=clock)
        try:
            engine.register(flow())
            clock.advance("1h")
            engine.run_due()
            inst = engine.get(iid)
        finally:
            engine.close()
            gc.collect()
        if hour == 1:
            assert inst.status == "waiting"
            assert inst.step_results["fan/a/a2"].status == "completed"
            assert inst.step_results["fan/b/w"].status == "waiting"
    assert inst.status == "completed"
    assert inst.output == {"a": "a2", "b": "b2"}
    assert calls == Counter({"a1": 1, "a2": 1, "b1": 1, "b2": 1})


def test_events_reach_waits_inside_branches(timed: Engine) -> None:
    timed.register(
        workflow("branch-events")
        .parallel(
            "fan",
            branches=[
                branch("a").wait("ok", event="go").build(),
                branch("b").wait("ok", event="go").build(),
                branch("c").wait("ok", event="other").build(),
            ],
        )
        .build()
    )
    inst = timed.execute("branch-events", {})
    assert inst.status == "waiting"
    timed.send_event(inst.id, "other", "c")
    timed.send_event(inst.id, "go", 1)
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "waiting"  # one "go" is consumed by one wait only
    timed.send_event(inst.id, "go", 2)
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "completed"
    assert inst.output["c"] == "c"
    assert sorted([inst.output["a"], inst.output["b"]]) == [1, 2]


def test_cancel_reaches_every_branch(timed: Engine) -> None:
    timed.register(
        workflow("cancel-fan")
        .parallel(
            "fan",
            branches=[
                branch("a").wait("w", duration="1h").build(),
                branch("b").wait("w", event="never").build(),
            ],
        )
        .build()
    )
    inst = timed.execute("cancel-fan", {})
    timed.cancel(inst.id)
    inst = timed.get(inst.id)
    assert inst.status == "cancelled"
    for path in ("fan", "fan/a/w", "fan/b/w"):
        assert inst.step_results[path].status == "cancelled", path


def test_race_drops_the_losers_timer(timed: Engine, clock: ManualClock) -> None:
    ran: list[str] = []
    timed.register(
        workflow("timer-race")
        .parallel(
            "race",
            mode="race",
            branches=[
                branch("slow")
                .wait("nap", duration="1h")
                .task("late", lambda x: ran.append("late"))
                .build(),
                branch("quick").wait("nap", duration="1m").task("t", lambda x: "q").build(),
            ],
        )
        .build()
    )
    inst = timed.execute("timer-race", {})
    assert inst.status == "waiting"
    clock.advance("1m")
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"winner": "quick", "value": "q"}
    assert inst.step_results["race/slow/nap"].status == "cancelled"
    clock.advance("2h")
    assert timed.run_due() == 0
    assert ran == []
    assert "race/slow/late" not in timed.get(inst.id).step_results


def test_race_ignores_a_sync_losers_late_result(engine: Engine) -> None:
    def slow(data: Any) -> str:
        time.sleep(0.4)  # a thread cannot be interrupted: its result must be ignored
        return "slow"

    engine.register(
        workflow("sync-race")
        .parallel(
            "race",
            mode="race",
            branches=[
                branch("s").task("slow", slow).build(),
                branch("f").task("fast", lambda x: "f").build(),
            ],
        )
        .build()
    )
    inst = engine.execute("sync-race", {})
    assert inst.output == {"winner": "f", "value": "f"}
    time.sleep(0.6)
    inst = engine.get(inst.id)
    assert inst.step_results["race/s/slow"].status == "cancelled"
    late = [
        h
        for h in engine.history(inst.id)
        if h.step == "race/s/slow" and h.type == "workflow.step.completed"
    ]
    assert late == []


def test_wait_all_waits_for_a_branch_timer(timed: Engine, clock: ManualClock) -> None:
    def broken(data: Any) -> None:
        raise RuntimeError("broken")

    timed.register(
        workflow("wait-all-timer")
        .parallel(
            "fan",
            failure="wait-all",
            branches=[
                branch("a").task("bad", broken).build(),
                branch("b").wait("w", duration="1h").task("t", lambda x: "b").build(),
            ],
        )
        .build()
    )
    inst = timed.execute("wait-all-timer", {})
    assert inst.status == "waiting"
    assert inst.step_results["fan"].status == "running"
    clock.advance("1h")
    timed.run_due()
    inst = timed.get(inst.id)
    assert inst.status == "failed"
    assert inst.step_results["fan/b/t"].status == "completed"
    fan_error = inst.step_results["fan"].error
    assert fan_error is not None
    assert [e["message"] for e in fan_error["errors"]] == ["broken"]


def test_wait_all_with_max_concurrency_still_starts_the_rest(engine: Engine) -> None:
    ran: list[str] = []

    def broken(data: Any) -> None:
        ran.append("a")
        raise RuntimeError("broken")

    engine.register(
        workflow("wait-all-serial")
        .parallel(
            "fan",
            failure="wait-all",
            max_concurrency=1,
            branches=[
                branch("a").task("t", broken).build(),
                branch("b").task("t", lambda x: ran.append("b")).build(),
                branch("c").task("t", lambda x: ran.append("c")).build(),
            ],
        )
        .build()
    )
    inst = engine.execute("wait-all-serial", {})
    assert inst.status == "failed"
    assert ran == ["a", "b", "c"]


def test_retry_after_fail_fast_reruns_the_failed_and_cancelled_branches(engine: Engine) -> None:
    calls: Counter[str] = Counter()
    broken = {"yes"}

    async def slow(data: Any) -> str:
        calls["slow"] += 1
        await asyncio.sleep(0.2)
        return "slow"

    def flaky(data: Any) -> str:
        calls["flaky"] += 1
        if broken:
            raise RuntimeError("flaky")
        return "flaky"

    def once(data: Any) -> str:
        calls["once"] += 1
        return "once"

    engine.register(
        workflow("retry-fan")
        .task("first", once)
        .parallel(
            "fan",
            branches=[branch("a").task("s", slow).build(), branch("b").task("f", flaky).build()],
        )
        .build()
    )
    inst = engine.execute("retry-fan", {})
    assert inst.status == "failed"
    assert inst.step_results["fan/a/s"].status == "cancelled"
    broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == {"a": "slow", "b": "flaky"}
    assert calls == Counter({"once": 1, "slow": 2, "flaky": 2})


def test_yaml_parallel_on_error_wait_all(engine: Engine) -> None:
    def broken(data: Any) -> None:
        raise RuntimeError(f"broken {data['n']}")

    engine.action("broken")(broken)
    engine.register(
        load_yaml(
            """
id: yaml-fan
steps:
  - id: fan
    type: parallel
    onError: wait-all
    branches:
      - name: a
        steps:
          - id: x
            action: broken
            params: {n: 1}
      - name: b
        steps:
          - id: y
            action: noop
"""
        )
    )
    inst = engine.execute("yaml-fan", {"v": 1})
    assert inst.status == "failed"
    assert inst.step_results["fan/b/y"].status == "completed"
    fan_error = inst.step_results["fan"].error
    assert fan_error is not None
    assert [e["message"] for e in fan_error["errors"]] == ["broken 1"]
