"""A handler that raises ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException`` never
wedges the engine (API.md section 2, Timeouts).

``execute`` and ``run_due`` hand the very exception to their caller; the instance is left for
recovery: its lease given up at once, its step not counted as a failed attempt, so another
engine (or ``run_due``) completes it. A worker goes on with its other instances; a handler's
``SystemExit``/``KeyboardInterrupt`` stops it gracefully, as SIGTERM does. Every call here runs
in a thread with a bound (``bounded``), so a wedged engine fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from statemachine import (
    Engine,
    RetryPolicy,
    StatemachineError,
    StepContext,
    branch,
    workflow,
)
from statemachine.engine import EngineSettings
from statemachine.testing import ManualClock
from tests.integration.gate import Gate

BOUND = 20.0  # seconds any engine call here may take before the engine counts as wedged


class Abort(BaseException):
    """A BaseException of the user's own (as trio's or gevent's cancellations are)."""


def make(kind: str) -> BaseException:
    return {"interrupt": KeyboardInterrupt(), "exit": SystemExit(3), "abort": Abort("abort")}[kind]


def bounded(call: Callable[[], Any], timeout: float = BOUND) -> tuple[str, Any]:
    """Run ``call`` in a thread: ("returned", value) or ("raised", exception); fail if it hangs."""
    out: list[tuple[str, Any]] = []

    def target() -> None:
        try:
            out.append(("returned", call()))
        except BaseException as exc:  # the very exception is what the tests look at
            out.append(("raised", exc))

    thread = threading.Thread(target=target, name="test-caller", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the engine call did not return within {timeout}s: the engine is wedged")
    return out[0]


class Interrupting:
    """A sync handler: its ``at``-th call (every one from there with ``always``) raises ``exc``
    while ``armed``; the others return their input."""

    def __init__(self, exc: BaseException, at: int = 1, always: bool = True) -> None:
        self.exc, self.at, self.always = exc, at, always
        self.armed = True
        self.threads: list[str] = []

    def __call__(self, data: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        calls = len(self.threads)
        if self.armed and (calls == self.at or (self.always and calls > self.at)):
            raise self.exc
        return data


def _async_handler(state: Interrupting) -> Callable[[Any], Any]:
    async def handler(data: Any) -> Any:
        await asyncio.sleep(0)
        return state(data)

    return handler


def _register(engine: Engine, where: str, state: Interrupting, name: str = "interrupted") -> None:
    """Two steps on one handler. ``pool``: the first call (always measured in the pool) raises;
    ``inline``: the second does, run inline on the engine's loop; ``async``: natively."""
    handler: Any = _async_handler(state) if where == "async" else state
    if where == "inline":
        state.at = 2
    engine.register(workflow(name).task("s0", handler).task("s1", handler).build())


def _raising_thread(state: Interrupting) -> str:
    return state.threads[state.at - 1]


@pytest.fixture
def other(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    """A second engine on the same database (another process, as far as leases go)."""
    eng = Engine(db_url, clock=clock, worker_id="other")
    yield eng
    eng.close()
    gc.collect()


@pytest.mark.parametrize("raised", ["interrupt", "exit", "abort"])
@pytest.mark.parametrize("where", ["pool", "inline", "async"])
def test_execute_raises_the_handlers_exception_and_another_engine_completes_the_instance(
    engine: Engine, other: Engine, where: str, raised: str
) -> None:
    state = Interrupting(make(raised))
    _register(engine, where, state)
    outcome, exc = bounded(lambda: engine.execute("interrupted", {"v": 1}, instance_id="int-1"))
    assert (outcome, exc) == ("raised", state.exc)  # the handler's very exception
    if where == "inline":
        assert _raising_thread(state) == "test-caller"  # execute runs on its caller's thread
    elif where == "pool":
        assert _raising_thread(state).startswith("sm-step")

    rec = engine.store.get("int-1")
    assert rec is not None and rec.status == "running"
    assert rec.lease_owner is None  # given up at once: nobody waits for it to expire
    failed = [h for h in engine.history("int-1") if h.type.endswith(("step.failed", "step.retry"))]
    assert failed == []  # an interrupt is not a failed attempt (no retry policy here)

    state.armed = False
    _register(other, where, state)
    assert bounded(other.run_due) == ("returned", 1)
    inst = other.get("int-1")
    assert inst.status == "completed" and inst.output == {"v": 1}
    assert [inst.step_results[s].status for s in ("s0", "s1")] == ["completed", "completed"]

    # the engine is not wedged: it runs the next instance as before
    engine.register(workflow("after").task("a", lambda x: x + 1).build())
    assert bounded(lambda: engine.execute("after", 1).output) == ("returned", 2)


def test_a_keyboard_interrupt_during_retries_leaves_the_instance_to_recovery(
    engine: Engine,
) -> None:
    """DBOS's test_keyboardinterrupt_during_retries: a step that may retry raises
    KeyboardInterrupt; the caller gets it, and recovery later completes the workflow."""
    raise_interrupt = True

    def failing_step(data: Any, ctx: StepContext) -> str:
        if raise_interrupt:
            raise KeyboardInterrupt
        return ctx.instance_id

    policy = RetryPolicy(max_attempts=3, interval="1s")
    engine.register(workflow("retrying").task("step", failing_step, retry=policy).build())
    outcome, exc = bounded(lambda: engine.execute("retrying", {}))
    assert outcome == "raised" and isinstance(exc, KeyboardInterrupt)
    (inst,) = engine.list(workflow="retrying")
    assert inst.status == "running"

    raise_interrupt = False
    assert bounded(engine.run_due) == ("returned", 1)
    done = engine.get(inst.id)
    assert done.status == "completed" and done.output == inst.id
    types = [h.type for h in engine.history(inst.id)]
    assert "workflow.step.failed" not in types and "workflow.step.retry" not in types


@pytest.mark.parametrize("where", ["pool", "async"])
def test_run_due_raises_the_handlers_exception_and_a_later_run_due_completes(
    engine: Engine, where: str
) -> None:
    state = Interrupting(SystemExit(3))
    _register(engine, where, state)
    iid = engine.start("interrupted", {"v": 2})
    outcome, exc = bounded(engine.run_due)
    assert outcome == "raised" and isinstance(exc, SystemExit) and exc.code == 3
    state.armed = False
    assert bounded(engine.run_due) == ("returned", 1)
    assert engine.get(iid).status == "completed"


def test_a_handler_interrupted_every_time_is_dead_lettered(db_url: str) -> None:
    """Each interrupt counts as a recovery, so a handler that always raises one cannot keep
    a worker (or ``run_due``) re-running it forever."""
    engine = Engine(db_url, clock=ManualClock(), settings=EngineSettings(max_recoveries=2))
    try:
        _register(engine, "pool", Interrupting(Abort("always")))
        iid = engine.start("interrupted", {})
        for _ in range(3):
            outcome, exc = bounded(engine.run_due)
            assert outcome == "raised" and isinstance(exc, Abort)
        assert bounded(engine.run_due) == ("returned", 1)
        inst = engine.get(iid)
        assert inst.status == "failed" and inst.error is not None
        assert inst.error["type"] == "DeadLettered"
        # retry clears the count (API.md section 5): the instance runs again, not dead-lettered
        engine.retry(iid)
        outcome, exc = bounded(engine.run_due)
        assert outcome == "raised" and isinstance(exc, Abort)
        assert engine.get(iid).status == "running"
    finally:
        engine.close()


# -- workers (real clock) --------------------------------------------------------------------


@pytest.fixture
def live(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


def _wait_until(check: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize(("raised", "where"), [("interrupt", "pool"), ("exit", "async")])
def test_a_handlers_exit_stops_the_worker_gracefully_and_the_others_finish_their_step(
    live: Engine, raised: str, where: str
) -> None:
    gate, after = Gate(), []
    live.register(
        workflow("gated").task("a", gate).task("b", lambda x: after.append(x) or x).build()
    )
    state = Interrupting(make(raised))
    _register(live, where, state)
    gated = live.start("gated", {})
    with live.worker(concurrency=4, poll_interval="20ms"):
        assert gate.entered.wait(timeout=BOUND)
        bad = live.start("interrupted", {"v": 3})
        _wait_until(lambda: len(state.threads) == 1)
        time.sleep(0.3)  # the worker is stopping now, by itself
        gate.release.set()
        _wait_until(lambda: live.get(gated).step_results["a"].status == "completed")
        time.sleep(0.5)  # a worker still running would start b now
        assert after == []
        exiting = time.monotonic()
    assert time.monotonic() - exiting < 5  # stopped already: no TimeoutError, no lease wait

    for iid in (gated, bad):
        rec = live.store.get(iid)
        assert rec is not None and rec.lease_owner is None and rec.status == "running"
    state.armed = False
    with live.worker(concurrency=4, poll_interval="20ms"):
        assert live.wait(gated, timeout=BOUND).status == "completed"
        assert live.wait(bad, timeout=BOUND).status == "completed"
    assert after == ["gate"]


def test_another_base_exception_leaves_the_worker_running_the_others(live: Engine) -> None:
    """The worker goes on: the others complete, and the interrupted instance is taken up
    again at once (as after a crash, without waiting for a lease to expire)."""
    once = Interrupting(Abort("once"), always=False)
    _register(live, "pool", once, name="once")
    always = Interrupting(Abort("always"))
    _register(live, "pool", always, name="always")
    live.register(workflow("plain").task("a", lambda x: x).task("b", lambda x: x).build())
    bad = [live.start("once", {"v": 4}), live.start("always", {"v": 5})]
    with live.worker(concurrency=4, poll_interval="20ms"):
        plain = [live.start("plain", {"n": i}) for i in range(5)]
        assert all(live.wait(i, timeout=BOUND).status == "completed" for i in plain)
        assert live.wait(bad[0], timeout=BOUND).status == "completed"
        dead = live.wait(bad[1], timeout=BOUND)  # every run interrupted: dead-lettered
    assert len(once.threads) == 3  # s0 interrupted, s0 again, s1
    assert dead.status == "failed" and dead.error is not None
    assert dead.error["type"] == "DeadLettered"
    assert len(always.threads) == live.settings.max_recoveries + 1


def test_run_worker_returns_after_a_handlers_keyboard_interrupt(live: Engine) -> None:
    state = Interrupting(KeyboardInterrupt())
    _register(live, "pool", state)
    iid = live.start("interrupted", {"v": 5})
    outcome = bounded(lambda: live.run_worker(concurrency=2, poll_interval="20ms"))
    assert outcome == ("returned", None)
    rec = live.store.get(iid)
    assert rec is not None and rec.lease_owner is None and rec.status == "running"


# -- the lease keeper ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it dies
def test_the_lease_keeper_lets_the_leases_of_a_dead_loop_expire(sqlite_url: str) -> None:
    """Should a background worker's loop thread die all the same, the keeper must not take it
    for a stalled loop and keep its leases alive forever: they lapse, and another engine takes
    over. Leaving the ``worker()`` block hears of it instead of waiting forever."""
    engine = Engine(sqlite_url, lease="1.5s")
    other = Engine(sqlite_url, lease="1.5s", worker_id="thief")
    entered = threading.Event()

    def die() -> None:  # outside any task: asyncio lets it end run_forever, and the thread
        raise SystemExit

    async def kills_its_loop(data: Any) -> Any:
        asyncio.get_running_loop().call_later(0.05, die)
        entered.set()
        await asyncio.sleep(60)
        return data

    try:
        engine.register(workflow("dying").task("a", kills_its_loop).build())
        other.register(workflow("dying").task("a", lambda x: "taken over").build())
        iid = engine.start("dying", {})
        with (
            pytest.raises(StatemachineError, match="event loop"),
            engine.worker(poll_interval="10ms", grace="1s"),
        ):
            assert entered.wait(timeout=BOUND)
            deadline = time.monotonic() + 10
            while True:
                now = other.clock.now()
                if other.store.claim(iid, "thief", now, now + timedelta(seconds=1.5)):
                    break
                assert time.monotonic() < deadline, "the dead loop's lease is still being kept"
                time.sleep(0.1)
        assert engine.services.local.leases_extended == 0
    finally:
        engine.close()
        other.close()


def test_an_interrupt_in_one_branch_cancels_its_siblings_and_the_run_resumes_later(
    engine: Engine, other: Engine
) -> None:
    """The caller hears at once, not when a slow sibling branch ends; recovery runs both."""
    slow_started, cancelled = threading.Event(), threading.Event()
    state = Interrupting(KeyboardInterrupt())

    async def slow(data: Any) -> str:
        slow_started.set()
        try:
            await asyncio.sleep(0.05 if not state.armed else 60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "slow"

    def interrupting(data: Any) -> Any:
        assert slow_started.wait(timeout=BOUND)
        return state(data)

    for eng in (engine, other):
        eng.register(
            workflow("fork")
            .parallel(
                "both",
                branches=[
                    branch("slow").task("s", slow).build(),
                    branch("quick").task("q", interrupting).build(),
                ],
            )
            .build()
        )
    began = time.monotonic()
    outcome, exc = bounded(lambda: engine.execute("fork", {"v": 6}, instance_id="fork-1"))
    assert outcome == "raised" and isinstance(exc, KeyboardInterrupt)
    assert time.monotonic() - began < 30
    assert cancelled.wait(timeout=5)  # the sibling's handler is not left running
    state.armed = False
    slow_started.clear()
    assert bounded(other.run_due) == ("returned", 1)
    inst = other.get("fork-1")
    assert inst.status == "completed", inst.error
    assert inst.output == {"slow": "slow", "quick": {"v": 6}}
