"""Map steps on real databases: items from a callable or an expression, order, failures, durability."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from statemachine import Engine, StepContext, WorkflowDefinition, branch, load_yaml, workflow
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("items", ["callable", "expression"])
def test_map_results_are_in_item_order(engine: Engine, items: str) -> None:
    seen: list[Any] = []

    def square(data: Any, ctx: StepContext) -> dict[str, Any]:
        seen.append(data)
        return {"item": data, "square": data * data}

    source: Any = (lambda ctx: ctx.input["items"]) if items == "callable" else "input.items"
    engine.register(
        workflow("squares")
        .map(
            "each",
            items=source,
            iterator=branch("one")
            .task("square", square)
            .task("label", lambda x: f"{x['item']}^2={x['square']}")
            .build(),
        )
        .pass_("after", transform=lambda ctx: {"all": ctx.steps["each"]})
        .build()
    )
    inst = engine.execute("squares", {"items": [3, 1, 2]})
    assert inst.status == "completed"
    assert sorted(seen) == [1, 2, 3]  # the iterator gets each item as its input
    expected = ["3^2=9", "1^2=1", "2^2=4"]
    assert inst.step_results["each"].output == expected
    assert inst.output == {"all": expected}
    assert inst.step_results["each"].status == "completed"
    assert set(inst.step_results) == {
        "each", "after", "each/one/square", "each/one/label",
        *(f"each/one@{i}/{s}" for i in range(3) for s in ("square", "label")),
    }  # fmt: skip
    # the latest item's result sits at the plain path; history keeps every one
    assert inst.step_results["each/one/label"].status == "completed"
    assert inst.step_results["each/one/label"].output in expected
    labels = [
        h.data.get("output")
        for h in engine.history(inst.id)
        if h.type == "workflow.step.completed"
        and h.step is not None
        and h.step.startswith("each/one")
        and h.step.endswith("/label")
    ]
    assert sorted(labels) == sorted(expected)


def test_map_over_an_empty_list(engine: Engine) -> None:
    engine.register(
        workflow("empty-map")
        .map("each", items="input.items", iterator=branch("one").task("t", lambda x: x).build())
        .build()
    )
    inst = engine.execute("empty-map", {"items": []})
    assert inst.status == "completed"
    assert inst.output == []


@pytest.mark.parametrize("limit", [1, None])
def test_a_failing_item_fails_the_map_with_its_index(engine: Engine, limit: int | None) -> None:
    ran: list[int] = []

    def check(data: int) -> int:
        ran.append(data)
        if data == 20:
            raise ValueError(f"bad item {data}")
        return data

    engine.register(
        workflow("picky")
        .map(
            "each",
            items="input.items",
            max_concurrency=limit,
            iterator=branch("one").task("check", check).build(),
        )
        .task("after", lambda x: "never")
        .build()
    )
    inst = engine.execute("picky", {"items": [10, 20, 30]})
    assert inst.status == "failed"
    each = inst.step_results["each"]
    assert each.status == "failed"
    assert each.error is not None
    assert each.error["index"] == 1
    assert "1" in str(each.error["message"]) and "bad item 20" in str(each.error["message"])
    if limit == 1:
        assert ran == [10, 20]  # one item at a time: the third never started
    assert "after" not in inst.step_results
    assert inst.error is not None and "bad item 20" in str(inst.error["message"])


class Counting:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def work(self, data: int, ctx: StepContext) -> int:
        self.calls[f"work:{data}"] += 1
        return data

    def finish(self, data: Any, ctx: StepContext) -> int:
        item = ctx.steps["work"]
        self.calls[f"finish:{item}"] += 1
        return int(item) * 10


def _durable_map(c: Counting, limit: int) -> WorkflowDefinition:
    return (
        workflow("slow-map")
        .task("before", lambda x: x)
        .map(
            "each",
            items="input.items",
            max_concurrency=limit,
            iterator=branch("item")
            .task("work", c.work)
            .wait("nap", duration="1h")
            .task("finish", c.finish)
            .build(),
        )
        .build()
    )


@pytest.mark.parametrize("limit", [1, 2])
def test_map_survives_closing_the_engine_between_items(db_url: str, limit: int) -> None:
    counting = Counting()
    clock = ManualClock(START)
    engine = Engine(db_url, clock=clock)
    try:
        engine.register(_durable_map(counting, limit))
        inst = engine.execute("slow-map", {"items": [1, 2, 3]}, instance_id="map-1")
        assert inst.status == "waiting"
        assert counting.calls == Counter({f"work:{i}": 1 for i in range(1, limit + 1)})
        # the items are stored once, as the map step's input, not in every state write
        assert inst.step_results["each"].input == [1, 2, 3]
        rec = engine.store.get("map-1")
        assert rec is not None and "items" not in rec.state["branches"]["each"]["#map"]
    finally:
        engine.close()
        gc.collect()

    rounds = 0
    while inst.status != "completed":
        rounds += 1
        assert rounds <= 3, f"the map is stuck: {inst.status}"
        engine = Engine(db_url, clock=clock)  # a new engine each time: nothing kept in memory
        try:
            engine.register(_durable_map(counting, limit))
            clock.advance("1h")
            engine.run_due()
            inst = engine.get("map-1")
            rec = engine.store.get("map-1")
            assert rec is not None
            if inst.status == "waiting":  # results of finished items are rows, not state
                assert set(rec.state["branches"]["each"]["#map"]) == {"next"}
            # an item's result row is the engine's own, not a step
            assert not [k for k in inst.step_results if k.endswith("/")]
        finally:
            engine.close()
            gc.collect()
        assert inst.status in ("waiting", "completed")
        # every handler ran at most once, whatever was started before the restart
        assert all(n == 1 for n in counting.calls.values()), counting.calls

    assert rounds == (3 if limit == 1 else 2)
    assert inst.output == [10, 20, 30]
    assert counting.calls == Counter(
        {"work:1": 1, "work:2": 1, "work:3": 1, "finish:1": 1, "finish:2": 1, "finish:3": 1}
    )


def test_map_items_run_concurrently_up_to_max_concurrency(db_url: str) -> None:
    running = {"now": 0, "peak": 0}
    spans: list[tuple[float, float]] = []

    async def nap(data: int) -> int:
        start = time.perf_counter()
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.3)
        running["now"] -= 1
        spans.append((start, time.perf_counter()))
        return data * 2

    engine = Engine(db_url)
    try:
        engine.register(
            workflow("wide-map")
            .map(
                "each",
                items="input.items",
                max_concurrency=2,
                iterator=branch("one").task("nap", nap).build(),
            )
            .build()
        )
        inst = engine.execute("wide-map", {"items": [1, 2, 3, 4]})
        assert inst.status == "completed"
        assert inst.output == [2, 4, 6, 8]
        assert running["peak"] == 2
        elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
        assert elapsed < 0.9, f"map items ran one after the other ({elapsed:.2f}s)"
    finally:
        engine.close()
        gc.collect()


def test_items_from_an_earlier_step_and_yaml_item_name(engine: Engine) -> None:
    sent: list[Any] = []
    engine.action("send")(lambda data: sent.append(data) or data["to"])
    engine.register(
        load_yaml(
            """
id: fan-mail
steps:
  - id: fetch
    action: noop
  - id: send-all
    type: map
    items: fetch.recipients
    iterator:
      name: recipient
      steps:
        - id: send
          action: send
          params:
            to: ${{ item }}
            note: "hello ${{ item }}"
"""
        )
    )
    inst = engine.execute("fan-mail", {"recipients": ["ada", "bob"]})
    assert inst.status == "completed"
    assert inst.output == ["ada", "bob"]
    assert sent == [{"to": "ada", "note": "hello ada"}, {"to": "bob", "note": "hello bob"}]


def test_parallel_inside_the_iterator(engine: Engine) -> None:
    engine.register(
        workflow("map-of-fans")
        .map(
            "each",
            items="input.xs",
            iterator=branch("it")
            .parallel(
                "fan",
                branches=[
                    branch("plus").task("t", lambda x: x + 1).build(),
                    branch("times").task("t", lambda x: x * 10).build(),
                ],
            )
            .build(),
        )
        .build()
    )
    inst = engine.execute("map-of-fans", {"xs": [1, 2, 3]})
    assert inst.status == "completed"
    assert inst.output == [
        {"plus": 2, "times": 10},
        {"plus": 3, "times": 20},
        {"plus": 4, "times": 30},
    ]


def test_map_inside_a_parallel_branch(engine: Engine) -> None:
    engine.register(
        workflow("fan-of-maps")
        .parallel(
            "fan",
            branches=[
                branch("doubled")
                .map(
                    "m", items="input.xs", iterator=branch("it").task("t", lambda x: 2 * x).build()
                )
                .build(),
                branch("other").task("t", lambda x: "other").build(),
            ],
        )
        .build()
    )
    inst = engine.execute("fan-of-maps", {"xs": [1, 2]})
    assert inst.status == "completed"
    assert inst.output == {"doubled": [2, 4], "other": "other"}
    assert inst.step_results["fan/doubled/m"].output == [2, 4]


def test_event_waits_inside_the_iterator(engine: Engine) -> None:
    engine.register(
        workflow("approve-each")
        .map(
            "each",
            items="input.xs",
            max_concurrency=1,
            iterator=branch("it").wait("ok", event="ok").build(),
        )
        .build()
    )
    inst = engine.execute("approve-each", {"xs": ["a", "b"]})
    assert inst.status == "waiting"
    engine.send_event(inst.id, "ok", "first")
    engine.send_event(inst.id, "ok", "second")  # buffered until the second item waits
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == ["first", "second"]


def test_cancel_during_a_map(engine: Engine) -> None:
    engine.register(
        workflow("cancel-map")
        .map("each", items="input.xs", iterator=branch("it").wait("w", duration="1h").build())
        .build()
    )
    inst = engine.execute("cancel-map", {"xs": [1, 2]})
    engine.cancel(inst.id)
    inst = engine.get(inst.id)
    assert inst.status == "cancelled"
    assert inst.step_results["each"].status == "cancelled"
    assert inst.step_results["each/it/w"].status == "cancelled"


def test_retry_of_a_map_resumes_at_the_failed_item(engine: Engine) -> None:
    seen: list[int] = []
    broken = {2}

    def work(item: int) -> int:
        seen.append(item)
        if item in broken:
            raise RuntimeError(f"item {item} broke")
        return item * 10

    engine.register(
        workflow("batch")
        .map(
            "each",
            items="input.items",
            max_concurrency=1,
            iterator=branch("one").task("work", work).build(),
        )
        .build()
    )
    inst = engine.execute("batch", {"items": [1, 2, 3]})
    assert inst.status == "failed"
    assert seen == [1, 2]

    broken.clear()
    engine.retry(inst.id)
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert seen == [1, 2, 2, 3]  # the completed first item is not run again
    assert inst.output == [10, 20, 30]


def _item_scopes_alive() -> int:
    """Scope objects of map items anywhere in this process (the plan cache included)."""
    from statemachine.runtime import plan as plans

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, plans.Scope) and "@" in o.prefix)


def test_the_plan_cache_stays_bounded_after_a_large_map(
    sqlite_url: str, clock: ManualClock
) -> None:
    """Plans are cached per definition for the process's life: a scope kept per map item ever
    run would grow without bound (2,002 after a 2,000-item map). In memory only: one backend."""
    from statemachine.runtime import plan as plans

    definition = (
        workflow("big-map")
        .map(
            "each",
            items="input.items",
            iterator=branch("one").task("a", lambda x: x + 1).build(),
            max_concurrency=50,
        )
        .build()
    )
    before = _item_scopes_alive()
    with Engine(sqlite_url, clock=clock) as engine:
        engine.register(definition)
        inst = engine.execute("big-map", {"items": list(range(2000))})
        assert inst.status == "completed"
        assert len(inst.output) == 2000
    plan = plans.plan_for(definition)
    assert len(plan.nodes) == 2 and len(plan.scopes) == 2  # the definition's own, no items
    assert _item_scopes_alive() - before <= 3 * plans.ITEM_SCOPES_KEPT
