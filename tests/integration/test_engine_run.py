"""Running sequential workflows end to end on a real database (SQLite file and Postgres).

Only the public surface is used: ``from statemachine import ...`` and ManualClock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from statemachine import Engine, RetryPolicy, StepContext, load_yaml, workflow

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2030, 1, 1, tzinfo=UTC)


def _example_actions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_example_actions", ROOT / "examples/actions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- sequential workflows ------------------------------------------------------------------


def test_builder_sequence_outputs_steps_and_history(engine: Engine) -> None:
    def double(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"n": data["n"] * 2}

    async def add_one(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"n": ctx.prev["n"] + 1}

    def square(data: dict[str, Any]) -> dict[str, Any]:  # the one-argument form
        return {"n": data["n"] ** 2}

    definition = (
        workflow("arith")
        .task("double", double)
        .task("add-one", add_one)
        .task("square", square)
        .build()
    )
    engine.register(definition)

    inst = engine.execute("arith", {"n": 3})

    assert inst.status == "completed"
    assert inst.output == {"n": 49}
    assert inst.workflow_name == "arith"
    assert inst.input == {"n": 3}
    assert inst.started_at is not None and inst.completed_at is not None
    assert set(inst.step_results) == {"double", "add-one", "square"}
    expected = {"double": {"n": 6}, "add-one": {"n": 7}, "square": {"n": 49}}
    for name, output in expected.items():
        result = inst.step_results[name]
        assert result.step_name == name
        assert result.status == "completed"
        assert result.output == output
        assert result.attempts == 1
        assert result.error is None
    # the default input of a task is the previous step's output
    assert inst.step_results["double"].input == {"n": 3}
    assert inst.step_results["square"].input == {"n": 7}

    history = engine.history(inst.id)
    seqs = [h.seq for h in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert history[0].type == "workflow.started"
    assert history[-1].type == "workflow.completed"
    assert history[-1].data.get("output") == {"n": 49}
    step_events = [(h.type, h.step) for h in history if h.type.startswith("workflow.step.")]
    assert step_events == [
        ("workflow.step.started", "double"),
        ("workflow.step.completed", "double"),
        ("workflow.step.started", "add-one"),
        ("workflow.step.completed", "add-one"),
        ("workflow.step.started", "square"),
        ("workflow.step.completed", "square"),
    ]
    assert [h.type for h in history].count("workflow.started") == 1
    assert engine.get(inst.id) == inst


def test_yaml_sequence_with_registered_actions(engine: Engine) -> None:
    actions = _example_actions().ShopActions()
    engine.register_actions(actions)
    engine.register(load_yaml(ROOT / "definitions" / "order-processing.yaml"))
    order = {
        "order_id": "o-7",
        "items": ["book", "pen", "ink"],
        "amount": 42.5,
        "email": "ada@example.com",
    }

    inst = engine.execute("order-processing", order, instance_id="order-o-7")

    assert inst.id == "order-o-7"
    assert inst.status == "completed"
    assert inst.workflow_version == "1"
    assert inst.output == {"sent_to": "ada@example.com"}
    steps = inst.step_results
    assert [s for s in ("validate", "reserve", "charge", "fulfill", "notify") if s in steps] == [
        "validate",
        "reserve",
        "charge",
        "fulfill",
        "notify",
    ]
    assert all(r.status == "completed" for r in steps.values())
    assert steps["validate"].input == {"order_id": "o-7"}  # ${{ }} typed values
    assert steps["reserve"].output == {"reserved": 3}
    assert steps["charge"].input == {"order_id": "o-7", "amount": 42.5}
    assert steps["charge"].output == {"charge_id": "ch_1", "amount": 42.5}
    assert steps["notify"].input == {
        "email": "ada@example.com",
        "subject": "Order o-7 is on its way",  # interpolated
    }
    # the charge was keyed by the idempotency key of that step
    assert len(actions.charges) == 1
    assert re.fullmatch(r"order-o-7/charge/\d+", next(iter(actions.charges)))
    completed = [h.step for h in engine.history(inst.id) if h.type == "workflow.step.completed"]
    assert completed == ["validate", "reserve", "charge", "fulfill", "notify"]


def test_events_published_to_subscribers(engine: Engine) -> None:
    everything: list[dict[str, Any]] = []
    step_only: list[dict[str, Any]] = []
    completed: list[dict[str, Any]] = []
    engine.on("*", everything.append)
    engine.on("workflow.step.*", step_only.append)
    engine.on("workflow.completed", completed.append)
    engine.register(workflow("evts").task("a", lambda x: {"a": 1}).task("b", lambda x: 2).build())

    inst = engine.execute("evts", {"k": "v"})

    assert inst.status == "completed"
    types = [e["type"] for e in everything]
    assert types[0] == "workflow.started"
    assert types[-1] == "workflow.completed"
    for event in everything:
        assert event["instance_id"] == inst.id
        assert event["workflow_name"] == "evts"
    # subscribers see what history records, in the same order
    recorded = [h.type for h in engine.history(inst.id)]
    assert [t for t in types if t in set(recorded)] == recorded
    assert step_only and all(e["type"].startswith("workflow.step.") for e in step_only)
    assert [(e["type"], e["step"]) for e in step_only] == [
        ("workflow.step.started", "a"),
        ("workflow.step.completed", "a"),
        ("workflow.step.started", "b"),
        ("workflow.step.completed", "b"),
    ]
    assert step_only[1]["output"] == {"a": 1}
    assert step_only[3]["output"] == 2
    assert len(completed) == 1 and completed[0]["output"] == 2
    progress = [e["progress"] for e in everything if e["type"] == "workflow.progress"]
    assert progress and progress == sorted(progress) and progress[-1] == 100


def test_step_context_fields(engine: Engine) -> None:
    seen: dict[str, dict[str, Any]] = {}
    custom: list[dict[str, Any]] = []
    engine.on("order.audited", custom.append)

    def first(data: Any, ctx: StepContext) -> dict[str, Any]:
        seen["first"] = _snapshot(data, ctx)
        ctx.set_metadata("stage", "first-done")
        ctx.emit("order.audited", {"by": "first"})
        ctx.log("info", "first ran", extra_field=1)
        return {"from": "first"}

    async def second(data: Any, ctx: StepContext) -> dict[str, Any]:
        seen["second"] = _snapshot(data, ctx)
        return {"from": "second"}

    engine.register(workflow("ctx-wf").task("first", first).task("second", second).build())
    iid = engine.start("ctx-wf", {"order": 1}, instance_id="ctx-1")
    engine.update_metadata(iid, {"tenant": "acme"})
    assert engine.run_due() >= 1

    inst = engine.get(iid)
    assert inst.status == "completed"
    one, two = seen["first"], seen["second"]
    assert one["data"] == {"order": 1}
    assert one["input"] == {"order": 1}
    assert one["steps"] == {}
    assert one["prev"] in (None, {"order": 1})  # nothing led here: nothing, or the input
    assert one["instance_id"] == "ctx-1"
    assert one["workflow_name"] == "ctx-wf"
    assert one["step_name"] == "first"
    assert one["attempt"] == 1
    assert one["metadata"] == {"tenant": "acme"}
    assert re.fullmatch(r"ctx-1/first/\d+", one["key"])

    assert two["input"] == {"order": 1}
    assert two["steps"] == {"first": {"from": "first"}}
    assert two["prev"] == {"from": "first"}
    assert two["step_name"] == "second"
    assert two["attempt"] == 1
    assert re.fullmatch(r"ctx-1/second/\d+", two["key"])
    assert one["key"].rsplit("/", 1)[1] == two["key"].rsplit("/", 1)[1]  # same iteration

    # set_metadata is persisted (and merged with what was there)
    assert inst.metadata == {"tenant": "acme", "stage": "first-done"}
    # ctx.emit reaches subscribers
    assert len(custom) == 1
    assert custom[0]["type"] == "order.audited"
    assert custom[0]["instance_id"] == "ctx-1"
    assert custom[0]["data"] == {"by": "first"}
    # ... and is recorded in history with the step that emitted it (API.md: custom events)
    audited = [h for h in engine.history(iid) if h.type == "order.audited"]
    assert [(h.step, h.data) for h in audited] == [("first", {"data": {"by": "first"}})]


def test_metadata_set_by_a_step_is_visible_to_later_steps(engine: Engine) -> None:
    seen: list[Any] = []

    def first(data: Any, ctx: StepContext) -> None:
        ctx.set_metadata("token", "t-1")

    def second(data: Any, ctx: StepContext) -> None:
        seen.append(dict(ctx.metadata))

    engine.register(workflow("meta-wf").task("first", first).task("second", second).build())
    inst = engine.execute("meta-wf", {})

    assert inst.status == "completed"
    assert inst.metadata == {"token": "t-1"}
    assert seen == [{"token": "t-1"}]


def test_ctx_metadata_is_read_only(engine: Engine) -> None:
    outcome: list[str] = []

    def step(data: Any, ctx: StepContext) -> None:
        try:
            ctx.metadata["x"] = 1  # type: ignore[index]
        except TypeError:
            outcome.append("refused")

    engine.register(workflow("ro-meta").task("s", step).build())
    inst = engine.execute("ro-meta", {})
    assert inst.status == "completed"
    assert outcome == ["refused"]
    assert inst.metadata == {}


def test_sync_handlers_run_off_the_event_loop(engine: Engine) -> None:
    threads: dict[str, str] = {}

    def sync_step(data: Any) -> str:
        threads["sync"] = threading.current_thread().name
        return "ok"

    async def async_step(data: str) -> str:
        threads["async"] = threading.current_thread().name
        return data + "!"

    engine.register(workflow("threads").task("s", sync_step).task("a", async_step).build())
    inst = engine.execute("threads", None)
    assert inst.status == "completed"
    assert inst.output == "ok!"
    assert threads["sync"] != threads["async"]  # a blocking handler does not block the loop


def _snapshot(data: Any, ctx: StepContext) -> dict[str, Any]:
    return {
        "data": data,
        "input": ctx.input,
        "steps": dict(ctx.steps),
        "prev": ctx.prev,
        "instance_id": ctx.instance_id,
        "workflow_name": ctx.workflow_name,
        "step_name": ctx.step_name,
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
        "metadata": dict(ctx.metadata),
    }


# -- outputs that cannot be stored ---------------------------------------------------------


class _Thing:
    pass


def _contains_itself() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param({"tags": {"a", "b"}}, "set", id="set"),
        pytest.param({"obj": _Thing()}, "_Thing", id="object"),
        pytest.param({"score": math.nan}, "nan", id="nan"),
        pytest.param({"score": math.inf}, "inf", id="inf"),
        pytest.param({"text": "a\u0000b"}, "NUL", id="nul"),
        pytest.param({1: "int key"}, "int", id="int-key"),
        pytest.param(_contains_itself(), "contains itself", id="cycle"),  # used to hang
    ],
)
def test_unstorable_output_fails_the_step_cleanly(
    engine: Engine, value: Any, type_name: str
) -> None:
    calls: list[int] = []

    def produce(data: Any, ctx: StepContext) -> Any:
        calls.append(ctx.attempt)
        return value

    after: list[int] = []
    engine.register(
        workflow("unstorable")
        .task(
            "produce",
            produce,
            retry=RetryPolicy(max_attempts=3, interval="1s"),
        )
        .task("after", lambda x: after.append(1))
        .build()
    )

    inst = engine.execute("unstorable", {})

    assert inst.status == "failed"
    assert calls == [1]  # an output that cannot be stored fails the step at once
    assert after == []
    result = inst.step_results["produce"]
    assert result.status == "failed"
    assert result.output is None
    assert result.error is not None
    message = str(result.error.get("message"))
    assert "produce" in message
    assert type_name.lower() in message.lower()
    assert inst.error is not None
    # the engine is still usable afterwards, and nothing was half-written
    assert [h.type for h in engine.history(inst.id)][-1] == "workflow.failed"


class Receipt(BaseModel):
    id: str
    amount: float
    at: datetime
    lines: list[str]


def test_pydantic_output_stored_as_json(engine: Engine) -> None:
    when = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)

    def charge(data: Any) -> Receipt:
        return Receipt(id="r-1", amount=9.5, at=when, lines=["a", "b"])

    seen: list[Any] = []

    def after(data: Any, ctx: StepContext) -> Any:
        seen.append((data, ctx.steps["charge"]))
        return data["id"]

    engine.register(workflow("pyd").task("charge", charge).task("after", after).build())
    inst = engine.execute("pyd", {})

    assert inst.status == "completed"
    dumped = Receipt(id="r-1", amount=9.5, at=when, lines=["a", "b"]).model_dump(mode="json")
    assert inst.step_results["charge"].output == dumped
    assert isinstance(inst.step_results["charge"].output["at"], str)
    assert seen == [(dumped, dumped)]
    assert inst.output == "r-1"


def test_output_schema_validates_and_dumps(engine: Engine) -> None:
    engine.register(
        workflow("out-schema")
        .task(
            "make",
            lambda x: {"id": "r-2", "amount": "3.5", "at": "2030-01-01T00:00:00Z", "lines": []},
            output_schema=Receipt,
        )
        .build()
    )
    inst = engine.execute("out-schema", {})
    assert inst.status == "completed"
    assert inst.output["amount"] == 3.5
    assert inst.output["id"] == "r-2"
