"""Starting instances: idempotent ids, concurrent starts, and bad input that must store nothing."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from statemachine import (
    DefinitionError,
    Engine,
    InputValidationError,
    InstanceNotFound,
    InvalidTransition,
    StatemachineError,
    WorkflowNotFound,
    load_yaml,
    workflow,
)
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


def _simple() -> Any:
    return workflow("simple").task("a", lambda x: {"got": x}).build()


# -- idempotent start ----------------------------------------------------------------------


def test_start_same_instance_id_twice_is_one_instance(engine: Engine) -> None:
    started: list[dict[str, Any]] = []
    engine.on("workflow.started", started.append)
    engine.register(_simple())

    first = engine.start("simple", {"n": 1}, instance_id="order-1")
    second = engine.start("simple", {"n": 2}, instance_id="order-1")

    assert first == second == "order-1"
    assert [i.id for i in engine.list()] == ["order-1"]
    assert engine.get("order-1").input == {"n": 1}  # the first start wins
    history = engine.history("order-1")
    assert [h.type for h in history].count("workflow.started") == 1
    assert len(started) == 1

    engine.run_due()
    inst = engine.execute("simple", {"n": 3}, instance_id="order-1")  # already done: no re-run
    assert inst.status == "completed"
    assert inst.output == {"got": {"n": 1}}
    assert [h.type for h in engine.history("order-1")].count("workflow.started") == 1
    assert [h.type for h in engine.history("order-1")].count("workflow.completed") == 1


def test_generated_instance_ids_are_distinct(engine: Engine) -> None:
    engine.register(_simple())
    ids = {engine.start("simple", {"n": i}) for i in range(5)}
    assert len(ids) == 5
    assert {i.id for i in engine.list()} == ids


def test_concurrent_starts_of_one_id_from_20_engines(db_url: str) -> None:
    """20 threads, each with its own Engine on the same database, start the same id at once."""
    n = 20
    engines = [Engine(db_url, clock=ManualClock(START)) for _ in range(n)]
    started_events: list[dict[str, Any]] = []
    lock = threading.Lock()
    try:
        for eng in engines:
            eng.register(_simple())

            def record(ev: dict[str, Any]) -> None:
                with lock:
                    started_events.append(ev)

            eng.on("workflow.started", record)
        barrier = threading.Barrier(n)
        results: list[str] = []
        failures: list[BaseException] = []

        def go(eng: Engine, i: int) -> None:
            try:
                barrier.wait(timeout=30)
                iid = eng.start("simple", {"n": i}, instance_id="the-one")
                with lock:
                    results.append(iid)
            except BaseException as exc:
                with lock:
                    failures.append(exc)

        threads = [threading.Thread(target=go, args=(e, i)) for i, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert failures == []
        assert results == ["the-one"] * n
        check = engines[0]
        assert [i.id for i in check.list()] == ["the-one"]
        assert [h.type for h in check.history("the-one")].count("workflow.started") == 1
        assert len(started_events) == 1
        check.run_due()
        assert check.get("the-one").status == "completed"
    finally:
        for eng in engines:
            eng.close()
        gc.collect()


def test_engines_created_concurrently_on_a_fresh_database(db_url: str) -> None:
    """The schema is created once even when several processes' engines open it together."""
    n = 8
    barrier = threading.Barrier(n)
    engines: list[Engine] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            barrier.wait(timeout=30)
            eng = Engine(db_url, clock=ManualClock(START))
            with lock:
                engines.append(eng)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert failures == []
        assert len(engines) == n
        engines[0].register(_simple())
        assert engines[0].execute("simple", 1).status == "completed"
    finally:
        for eng in engines:
            eng.close()
        gc.collect()


# -- bad input stores nothing --------------------------------------------------------------


class OrderIn(BaseModel):
    order_id: str
    amount: float


def _snapshot(engine: Engine) -> list[tuple[str, str, int, Any]]:
    return [
        (i.id, i.status, len(engine.history(i.id)), i.metadata) for i in engine.list(limit=10_000)
    ]


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    """An engine with one registered workflow and one completed, one waiting instance."""
    engine.register(
        workflow("typed", input_schema=OrderIn)
        .task("a", lambda x: x)
        .wait("hold", event="go")
        .build()
    )
    engine.register(_simple())
    engine.execute("simple", {"n": 0}, instance_id="done-1")
    engine.execute("typed", {"order_id": "o-1", "amount": 1}, instance_id="wait-1")
    assert engine.get("wait-1").status == "waiting"
    return engine


def test_unregistered_workflow(seeded: Engine) -> None:
    before = _snapshot(seeded)
    with pytest.raises(WorkflowNotFound) as info:
        seeded.start("simpel", {"n": 1})
    assert "simpel" in str(info.value)
    with pytest.raises(WorkflowNotFound):
        seeded.execute("nope", {"n": 1}, instance_id="x-1")
    assert _snapshot(seeded) == before
    with pytest.raises(InstanceNotFound):
        seeded.get("x-1")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"order_id": "o-2"}, id="missing-field"),
        pytest.param({"order_id": "o-2", "amount": "lots"}, id="wrong-type"),
        pytest.param("not an object", id="not-a-dict"),
        pytest.param(None, id="none"),
    ],
)
def test_input_failing_the_schema(seeded: Engine, bad: Any) -> None:
    before = _snapshot(seeded)
    with pytest.raises(InputValidationError) as info:
        seeded.start("typed", bad, instance_id="typed-2")
    assert "typed" in str(info.value)
    with pytest.raises(InputValidationError):
        seeded.execute("typed", bad)
    assert _snapshot(seeded) == before
    with pytest.raises(InstanceNotFound):
        seeded.get("typed-2")


def test_unstorable_workflow_input(seeded: Engine) -> None:
    before = _snapshot(seeded)
    with pytest.raises(InputValidationError):
        seeded.start("simple", {"s": {1, 2}})
    with pytest.raises(InputValidationError):
        seeded.start("simple", {"s": float("nan")})
    assert _snapshot(seeded) == before


def test_unknown_instance_id(seeded: Engine) -> None:
    before = _snapshot(seeded)
    calls: list[Callable[[], object]] = [
        lambda: seeded.get("ghost"),
        lambda: seeded.history("ghost"),
        lambda: seeded.cancel("ghost"),
        lambda: seeded.send_event("ghost", "go", {"x": 1}),
        lambda: seeded.pause("ghost"),
        lambda: seeded.resume("ghost"),
        lambda: seeded.retry("ghost"),
        lambda: seeded.replay("ghost"),
        lambda: seeded.update_metadata("ghost", {"k": "v"}),
    ]
    for call in calls:
        with pytest.raises(InstanceNotFound) as info:
            call()
        assert "ghost" in str(info.value)
    assert _snapshot(seeded) == before


def test_register_yaml_with_unknown_action(seeded: Engine) -> None:
    seeded.action("validateOrder")(lambda x: x)
    seeded.action("chargeCard")(lambda x: x)
    definition = load_yaml(
        """
id: typo-flow
version: 1
steps:
  - id: validate
    action: validateOrdr
  - id: charge
    action: chargeCard
"""
    )
    before = _snapshot(seeded)
    with pytest.raises(DefinitionError) as info:
        seeded.register(definition)
    message = str(info.value)
    assert "validateOrdr" in message
    assert "did you mean" in message.lower()
    assert "validateOrder" in message
    assert any("validateOrdr" in e.message for e in info.value.errors)
    with pytest.raises(WorkflowNotFound):  # nothing was registered
        seeded.start("typo-flow", {})
    assert _snapshot(seeded) == before


def test_register_list_is_all_or_nothing(seeded: Engine) -> None:
    good = workflow("good-one").task("a", lambda x: x).build()
    bad = load_yaml("id: bad-one\nsteps:\n  - id: a\n    action: missingAction\n")
    with pytest.raises(DefinitionError):
        seeded.register([good, bad])
    with pytest.raises(WorkflowNotFound):
        seeded.start("good-one", {})


def test_control_calls_in_the_wrong_status(seeded: Engine) -> None:
    before = _snapshot(seeded)
    # done-1 is completed
    with pytest.raises(InvalidTransition):
        seeded.resume("done-1")
    with pytest.raises(InvalidTransition):
        seeded.retry("done-1")
    with pytest.raises(InvalidTransition):
        seeded.cancel("done-1")
    with pytest.raises(InvalidTransition):
        seeded.pause("done-1")
    with pytest.raises(InvalidTransition):
        seeded.send_event("done-1", "go", {})
    # wait-1 is waiting: not failed, not paused
    with pytest.raises(InvalidTransition):
        seeded.retry("wait-1")
    with pytest.raises(InvalidTransition):
        seeded.resume("wait-1")
    assert _snapshot(seeded) == before
    assert all(isinstance(e, StatemachineError) for e in (InvalidTransition("x"),))


def test_retry_of_a_running_instance(db_url: str) -> None:
    """While a worker runs a step, the instance is running: retry is refused, nothing changes."""
    release = threading.Event()
    entered = threading.Event()

    def slow(data: Any) -> str:
        entered.set()
        release.wait(timeout=30)
        return "done"

    engine = Engine(db_url)  # a real clock: a worker runs it
    try:
        engine.register(workflow("slow").task("s", slow).build())
        iid = engine.start("slow", {}, instance_id="slow-1")
        with engine.worker(concurrency=1, poll_interval="50ms"):
            assert entered.wait(timeout=20)
            assert engine.get(iid).status == "running"
            before = len(engine.history(iid))
            with pytest.raises(InvalidTransition):
                engine.retry(iid)
            with pytest.raises(InvalidTransition):
                engine.resume(iid)
            assert len(engine.history(iid)) == before
            release.set()
            inst = engine.wait(iid, timeout=20)
        assert inst.status == "completed"
        assert inst.output == "done"
    finally:
        release.set()
        engine.close()
        gc.collect()


def test_same_instance_id_for_another_workflow_is_refused(seeded: Engine) -> None:
    before = _snapshot(seeded)
    with pytest.raises(InvalidTransition):
        seeded.start("typed", {"order_id": "o-9", "amount": 2}, instance_id="done-1")
    assert _snapshot(seeded) == before


def test_validated_input_is_what_is_stored_and_seen(engine: Engine) -> None:
    seen: list[Any] = []
    engine.register(
        workflow("coerce", input_schema=OrderIn)
        .task("a", lambda data, ctx: seen.append((data, ctx.input)))
        .build()
    )
    inst = engine.execute("coerce", {"order_id": "o-3", "amount": "2.5"})
    assert inst.status == "completed"
    assert inst.input == {"order_id": "o-3", "amount": 2.5}
    assert seen == [(inst.input, inst.input)]
    model_inst = engine.execute("coerce", OrderIn(order_id="o-4", amount=1))
    assert model_inst.input == {"order_id": "o-4", "amount": 1.0}


def test_list_newest_first_with_filters(engine: Engine, clock: ManualClock) -> None:
    engine.register(_simple())
    engine.register(workflow("other").wait("w", event="never").build())
    ids = []
    for i in range(3):
        ids.append(engine.execute("simple", {"i": i}).id)
        clock.advance("1s")
    waiting = engine.execute("other", {}).id
    assert [i.id for i in engine.list()] == [waiting, *reversed(ids)]
    assert [i.id for i in engine.list(workflow="simple")] == list(reversed(ids))
    assert [i.id for i in engine.list(status="waiting")] == [waiting]
    assert [i.id for i in engine.list(limit=2, offset=1)] == [ids[2], ids[1]]
    assert engine.list(workflow="nothing") == []
    with pytest.raises(InputValidationError):
        engine.list(status="bogus")


def test_list_filters_on_metadata_keys_and_values(engine: Engine) -> None:
    """Every key given must be present with that value, compared with its JSON type (the
    string "1" is not the number 1, True is not 1), the same on SQLite and Postgres."""
    engine.register(_simple())
    metas = {
        "a": {"customer": "c-1", "tier": "gold", "n": 1},
        "b": {"customer": "c-1", "tier": "free", "n": 2.5, "vip": True},
        "c": {"customer": "c-2", "n": "1", "none": None, "deep": {"x": 1}},
        "d": {},
    }
    for iid, meta in metas.items():
        engine.start("simple", {}, instance_id=iid)
        if meta:
            engine.update_metadata(iid, meta)

    def ids(**meta: Any) -> list[str]:
        return sorted(i.id for i in engine.list(metadata=meta))

    assert ids(customer="c-1") == ["a", "b"]
    assert ids(customer="c-1", tier="gold") == ["a"]
    assert ids(customer="c-2", tier="gold") == []
    assert ids(n=1) == ["a"] and ids(n=1.0) == ["a"] and ids(n="1") == ["c"] and ids(n=2.5) == ["b"]
    assert ids(vip=True) == ["b"] and ids(vip=1) == [] and ids(vip=False) == []
    assert ids(none=None) == ["c"]
    assert ids(missing="x") == [] and ids(customer="c-\x00") == []
    assert ids() == ["a", "b", "c", "d"]  # an empty filter keeps everything
    assert [i.id for i in engine.list(workflow="simple", metadata={"customer": "c-2"})] == ["c"]
    with pytest.raises(InputValidationError, match="deep"):
        engine.list(metadata={"deep": {"x": 1}})


def test_ids_starting_with_a_prefix_are_found_exactly(engine: Engine) -> None:
    """What the command line resolves an id prefix with: case-sensitive, and ``_`` or ``%`` in
    a prefix are characters, not LIKE wildcards."""
    engine.register(_simple())
    for iid in ("abc-1", "abc-2", "ABC-3", "a_c-4", "a%c-5", "xbc-6"):
        engine.start("simple", {}, instance_id=iid)
    found = engine.store.ids_starting_with
    assert found("abc", 10) == ["abc-1", "abc-2"]
    assert found("abc", 1) == ["abc-1"]
    assert found("ABC", 10) == ["ABC-3"]
    assert found("a_", 10) == ["a_c-4"] and found("a%", 10) == ["a%c-5"]
    assert found("abc-2", 10) == ["abc-2"]
    assert found("", 10) == [] and found("a\x00", 10) == [] and found("zzz", 10) == []


def test_nul_and_lone_surrogates_are_refused_and_never_stored(engine: Engine) -> None:
    engine.register(workflow("echo").task("a", lambda x: x).build())
    for bad in ({"k": "a\x00b"}, {"a\x00": 1}, {"k": "\ud800"}):
        with pytest.raises(InputValidationError):
            engine.start("echo", bad)
    assert engine.list() == []
    with pytest.raises(InstanceNotFound):
        engine.get("a\x00b")
    assert engine.list(workflow="a\x00b") == []
