"""Quick sync handlers run inline on the loop's thread when an instance runs alone (no thread
hop): ``execute`` on the caller's own thread, a background worker on its loop thread. Slow
ones, ones with a timeout and async ones never do, and an inline handler can still call
asyncio.run or the engine itself."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from statemachine import Engine, workflow
from statemachine.testing import ManualClock


class Where:
    """Records the thread each call ran on."""

    def __init__(self, pause: float = 0.0) -> None:
        self.threads: list[str] = []
        self.pause = pause

    def __call__(self, data: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        if self.pause:
            time.sleep(self.pause)
        return data


def _chain(name: str, handler: Any, steps: int = 4, **options: Any) -> Any:
    builder = workflow(name)
    for i in range(steps):
        builder = builder.task(f"s{i}", handler, **options)
    return builder.build()


def test_a_quick_handler_runs_inline_after_one_measured_call(engine: Engine) -> None:
    where = Where()
    engine.register(_chain("quick", where))
    inst = engine.execute("quick", {"v": 1})
    assert inst.status == "completed" and inst.output == {"v": 1}
    assert where.threads[0].startswith("sm-step")  # the first call is measured in the pool
    assert set(where.threads[1:]) == {threading.current_thread().name}  # execute's caller


def test_a_slow_handler_always_runs_in_the_pool(engine: Engine) -> None:
    where = Where(pause=0.02)
    engine.register(_chain("slow", where, steps=3))
    assert engine.execute("slow", {}).status == "completed"
    assert all(name.startswith("sm-step") for name in where.threads) and len(where.threads) == 3


def test_a_step_with_a_timeout_never_runs_inline(engine: Engine) -> None:
    where = Where()
    engine.register(_chain("timed-steps", where, steps=3, timeout="5s"))
    assert engine.execute("timed-steps", {}).status == "completed"
    assert all(name.startswith("sm-step") for name in where.threads)


def test_an_inline_handler_may_run_its_own_event_loop(engine: Engine) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    def uses_asyncio(data: Any) -> Any:
        return {"n": asyncio.run(double(data["n"])), "thread": threading.current_thread().name}

    engine.register(_chain("nested-loop", uses_asyncio, steps=3))
    inst = engine.execute("nested-loop", {"n": 1})
    assert inst.status == "completed", inst.error
    assert inst.output["n"] == 8
    assert inst.output["thread"] == threading.current_thread().name  # it did run inline


def test_an_inline_handler_may_call_back_into_the_engine(engine: Engine) -> None:
    engine.register(_chain("child-chain", Where(), steps=2))

    def runs_a_child(data: Any) -> Any:
        child = engine.execute("child-chain", {"c": data["n"]})
        return {"n": data["n"] + 1, "child": child.status}

    engine.register(_chain("parent-chain", runs_a_child, steps=3))
    inst = engine.execute("parent-chain", {"n": 0})
    assert inst.status == "completed", inst.error
    assert inst.output == {"n": 3, "child": "completed"}
    assert len(engine.list(workflow="child-chain")) == 3


def test_an_inline_failure_is_recorded_like_any_other(engine: Engine) -> None:
    calls: list[int] = []

    def flaky(data: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("third call fails")
        return data

    engine.register(_chain("inline-fail", flaky, steps=4))
    inst = engine.execute("inline-fail", {})
    assert inst.status == "failed"
    assert inst.step_results["s2"].status == "failed"
    assert inst.step_results["s2"].error is not None
    assert inst.step_results["s2"].error["type"] == "ValueError"
    assert "s3" not in inst.step_results or inst.step_results["s3"].status != "completed"


def test_quick_handlers_run_inline_with_many_instances_in_flight(engine: Engine) -> None:
    where = Where()
    engine.register(_chain("crowd", where, steps=4))
    ids = [engine.start("crowd", {"n": i}) for i in range(20)]
    with engine.worker(concurrency=20, poll_interval="10ms"):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(engine.get(i).status == "completed" for i in ids):
                break
            time.sleep(0.02)
    assert {engine.get(i).status for i in ids} == {"completed"}
    assert len(where.threads) == 80
    assert where.threads[0].startswith("sm-step")  # measured in the pool first
    assert where.threads.count("statemachine-loop") >= 40  # then inline, crowd or not


def test_a_loop_stalled_by_an_inline_handler_keeps_its_leases(sqlite_url: str) -> None:
    """A handler quick so far runs inline, then blocks the loop for longer than the lease: the
    lease keeper holds the lease meanwhile, so no other worker takes the instance over."""
    engine = Engine(sqlite_url, lease="1.5s")
    other = Engine(sqlite_url, lease="1.5s", worker_id="thief")
    seen: list[str] = []

    def quick_then_stuck(data: Any, ctx: Any) -> Any:
        seen.append(threading.current_thread().name)
        if len(seen) == 2:  # inline now: block the loop past the lease
            time.sleep(2.5)
        return data

    try:
        engine.register(_chain("stuck", quick_then_stuck, steps=3))
        other.register(_chain("stuck", quick_then_stuck, steps=3))
        result: list[Any] = []
        runner = threading.Thread(target=lambda: result.append(engine.execute("stuck", {})))
        runner.start()
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[1:] == [runner.name]  # inline, on the thread that called execute
        time.sleep(2.0)  # past the lease the claim gave, while the handler still blocks
        (stuck,) = other.list(workflow="stuck")
        now = other.clock.now()
        assert other.store.claim(stuck.id, "thief", now, now + timedelta(seconds=1.5)) is None
        runner.join(timeout=20)
        assert result and result[0].status == "completed", result
        assert engine.services.local.leases_extended >= 1
        assert engine.executor.quick[quick_then_stuck] is False  # back to the pool for good
        assert seen[2].startswith("sm-step")
        rec = engine.store.get(stuck.id)
        assert rec is not None and rec.recoveries == 0
    finally:
        engine.close()
        other.close()


def test_each_commit_extends_the_lease_so_a_busy_runner_sends_no_heartbeat(
    engine: Engine, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's fenced UPDATE also moves its lease on: steps 20 s apart (more than a third of
    the 30 s lease) keep it with no heartbeat transaction of their own. (On Postgres the lease
    runs from the database's clock, which the ManualClock does not move.)"""
    seen: list[tuple[Any, Any]] = []
    pg = engine.store.dialect == "postgresql"

    def twenty_seconds(data: Any) -> Any:
        rec = engine.store.get("busy-1")
        assert rec is not None
        now = datetime.now(UTC) if pg else clock.now()
        seen.append((rec.lease_expires_at, now))  # as the step's start commit left it
        clock.advance("20s")
        return data

    beats: list[str] = []
    heartbeat = engine.store.heartbeat

    def counted(instance_id: str, epoch: int, now: Any, until: Any) -> bool:
        beats.append(instance_id)
        return heartbeat(instance_id, epoch, now, until)

    monkeypatch.setattr(engine.repo, "heartbeat", counted)
    engine.register(_chain("busy", twenty_seconds, steps=4))
    inst = engine.execute("busy", {"v": 1}, "busy-1")
    assert inst.status == "completed"
    lease = timedelta(seconds=engine.settings.lease)
    if pg:  # set by the database a moment before this process read it
        assert all(timedelta(0) < until - now <= lease for until, now in seen), seen
        assert len({until for until, _ in seen}) == len(seen)  # each commit moved it on
    else:
        assert [until for until, _ in seen] == [now + lease for _, now in seen]
    assert beats == []
    final = engine.store.get("busy-1")
    assert final is not None and final.lease_owner is None and final.lease_expires_at is None
