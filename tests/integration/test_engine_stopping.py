"""Stopping work that runs: step timeouts, the workflow's deadline and cancels (API.md section 2,
"Timeouts", and section 5).

An async handler is cancelled; a sync one cannot be, so it is abandoned: its late result is
discarded and noted in history, and no later attempt of its step starts in this process while
it still runs. These tests run on the real clock (the timeouts are real time) against SQLite
and Postgres; the cross-process cancel and the restart run real processes.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, StepContext, workflow
from statemachine.store import repository as repo
from tests.integration.programs import stop_worker
from tests.integration.programs.worker_support import Proc, read_lines, wait_until


@pytest.fixture
def live(db_url: str) -> Iterator[Engine]:
    """An Engine on the real clock: workflow deadlines and step timeouts pass in real time."""
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


def _late_notes(engine: Engine, iid: str) -> list[dict[str, Any]]:
    return [h.data for h in engine.history(iid) if h.type == "workflow.step.late_result"]


class Overlap:
    """A sync handler that records how many of its calls run at the same time."""

    def __init__(self, seconds: float, slow: tuple[int, ...] = (1, 2, 3)) -> None:
        self.seconds = seconds
        self.slow = slow  # the attempts that sleep
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.spans: list[tuple[int, float, float]] = []  # (attempt, began, ended)

    def __call__(self, data: Any, ctx: StepContext) -> str:
        began = time.monotonic()
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        try:
            time.sleep(self.seconds if ctx.attempt in self.slow else 0)
            return f"late-{ctx.attempt}"
        finally:
            with self.lock:
                self.current -= 1
                self.spans.append((ctx.attempt, began, time.monotonic()))


# -- item 1: a timed-out sync handler ---------------------------------------------------------


def test_attempts_of_a_timed_out_sync_step_never_overlap(live: Engine) -> None:
    slow = Overlap(0.6)
    live.register(
        workflow("no-overlap")
        .task("charge", slow, timeout="200ms", retry={"max_attempts": 3, "interval": 0.01})
        .build()
    )
    inst = live.execute("no-overlap", {})
    assert inst.status == "failed"
    step = inst.step_results["charge"]
    assert step.attempts == 3
    assert step.error is not None and step.error["type"] == "StepTimeoutError"
    wait_until("the last call returns", lambda: len(slow.spans) == 3, 10)
    assert slow.peak == 1  # was 3: three charges at once
    spans = sorted(slow.spans, key=lambda s: s[1])
    assert [s[0] for s in spans] == [1, 2, 3]
    for (_, _, ended), (_, began, _) in itertools.pairwise(spans):
        assert began >= ended  # each attempt began after the previous call returned
    wait_until("the last late result is noted", lambda: len(_late_notes(live, inst.id)) == 3, 10)
    notes = _late_notes(live, inst.id)
    assert [n["attempt"] for n in notes] == [1, 2, 3]
    assert all(n["discarded"] and n["ok"] for n in notes)
    after = live.get(inst.id)
    assert after.status == "failed"
    assert after.step_results["charge"].output is None  # no late result became the output


def test_a_late_result_is_never_the_step_output(live: Engine) -> None:
    slow = Overlap(0.8, slow=(1,))  # attempt 1 sleeps past its timeout; attempt 2 returns at once
    live.register(
        workflow("late-output")
        .task("charge", slow, timeout="300ms", retry={"max_attempts": 2, "interval": 0.01})
        .build()
    )
    inst = live.execute("late-output", {})
    assert inst.status == "completed"
    assert inst.output == "late-2"  # the second attempt's own result
    assert inst.step_results["charge"].output == "late-2"
    assert slow.peak == 1
    notes = _late_notes(live, inst.id)
    assert [(n["attempt"], n["ok"], n["discarded"]) for n in notes] == [(1, True, True)]
    types = [h.type for h in live.history(inst.id)]
    # the abandoned call ended before the next attempt began
    assert types.index("workflow.step.late_result") < types.index("workflow.step.completed")
    assert "late-1" not in str([h.data for h in live.history(inst.id)])


# -- item 2: the workflow timeout preempts ----------------------------------------------------


def test_the_workflow_deadline_cancels_a_running_async_step(live: Engine) -> None:
    cancelled: list[float] = []
    after: list[Any] = []

    async def slow(data: Any) -> str:
        try:
            await asyncio.sleep(6)
        except asyncio.CancelledError:
            cancelled.append(time.monotonic())
            raise
        return "too late"

    live.register(
        workflow("preempt-async")
        .timeout("1s")
        .task("slow", slow)
        .task("after", lambda x: after.append(x))
        .build()
    )
    began = time.monotonic()
    inst = live.execute("preempt-async", {})
    took = time.monotonic() - began
    assert inst.status == "timed_out"
    assert 0.9 < took < 4, took  # at the deadline, not when the step ends (6 s)
    assert len(cancelled) == 1 and cancelled[0] - began < 4
    assert after == []
    assert inst.step_results["slow"].status == "cancelled"
    assert inst.error is not None and inst.error["type"] == "WorkflowTimeout"
    types = [h.type for h in live.history(inst.id)]
    assert "workflow.step.completed" not in types
    assert types[-1] == "workflow.timed_out"


def test_the_workflow_deadline_abandons_a_running_sync_last_step(live: Engine) -> None:
    release = threading.Event()

    def slow(data: Any) -> str:
        release.wait(6)
        return "too late"

    live.register(workflow("preempt-sync").timeout("1s").task("slow", slow).build())
    began = time.monotonic()
    inst = live.execute("preempt-sync", {})
    assert time.monotonic() - began < 4
    assert inst.status == "timed_out"  # was "completed" when the step ended
    assert inst.output is None
    release.set()
    wait_until("the late result is noted", lambda: len(_late_notes(live, inst.id)) == 1, 10)
    after = live.get(inst.id)
    assert after.status == "timed_out"
    assert after.output is None
    assert after.step_results["slow"].status == "cancelled"
    assert after.step_results["slow"].output is None


def test_the_workflow_deadline_preempts_in_a_worker(live: Engine) -> None:
    release = threading.Event()

    def slow(data: Any) -> str:
        release.wait(6)
        return "too late"

    live.register(
        workflow("preempt-worker").timeout("1s").task("slow", slow).task("b", "noop").build()
    )
    try:
        with live.worker(concurrency=2, poll_interval="100ms"):
            began = time.monotonic()
            iid = live.start("preempt-worker", {})
            inst = live.wait(iid, timeout=10)
            took = time.monotonic() - began
    finally:
        release.set()
    assert inst.status == "timed_out"
    assert took < 4, took  # was 6 s: the step's end
    assert "b" not in inst.step_results
    wait_until("the late result is noted", lambda: len(_late_notes(live, iid)) == 1, 10)
    assert live.get(iid).status == "timed_out"


# -- item 3: cancel acts at once --------------------------------------------------------------


def _execute_in_thread(engine: Engine, name: str) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(engine.execute(name, {}, instance_id=f"{name}-1")),
        daemon=True,
    )
    thread.start()
    return thread, result


def test_a_cancel_in_this_process_cancels_a_running_async_handler_at_once(live: Engine) -> None:
    started = threading.Event()
    cancelled: list[float] = []
    after: list[Any] = []

    async def hold(data: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(time.monotonic())
            raise
        return "never"

    live.register(
        workflow("cancel-async").task("hold", hold).task("b", lambda x: after.append(x)).build()
    )
    thread, result = _execute_in_thread(live, "cancel-async")
    assert started.wait(10)
    asked = time.monotonic()
    live.cancel("cancel-async-1")
    thread.join(5)  # the lease is 30 s: a heartbeat would come after 10 s
    assert not thread.is_alive()
    assert cancelled and cancelled[0] - asked < 2
    assert result[0].status == "cancelled"
    inst = live.get("cancel-async-1")
    assert inst.status == "cancelled"
    assert inst.step_results["hold"].status == "cancelled"
    assert after == []


def test_a_cancel_in_this_process_abandons_a_running_sync_handler(live: Engine) -> None:
    started, release = threading.Event(), threading.Event()

    def hold(data: Any) -> str:
        started.set()
        release.wait(30)
        return "late"

    live.register(workflow("cancel-sync").task("hold", hold).task("b", "noop").build())
    thread, result = _execute_in_thread(live, "cancel-sync")
    try:
        assert started.wait(10)
        live.cancel("cancel-sync-1")
        thread.join(5)
        assert not thread.is_alive()  # execute returns; the handler's thread runs on
        assert result[0].status == "cancelled"
    finally:
        release.set()
    wait_until("the late result is noted", lambda: _late_notes(live, "cancel-sync-1") != [], 10)
    inst = live.get("cancel-sync-1")
    assert inst.status == "cancelled"
    assert inst.step_results["hold"].status == "cancelled"
    assert inst.step_results["hold"].output is None
    assert "b" not in inst.step_results


def test_a_cancel_from_another_process_reaches_a_worker_within_its_poll(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "stop.log"
    engine = Engine(db_url)
    engine.register(stop_worker.definitions(log), check_actions=False)
    worker = Proc.program("stop_worker", ["worker", db_url, str(log)], tmp_path, "worker")
    try:
        iid = engine.start(stop_worker.CANCEL, {})
        wait_until("the handler runs", lambda: "started" in read_lines(log), 30)
        asked = time.monotonic()
        engine.cancel(iid)
        wait_until("the handler is cancelled", lambda: "cancelled" in read_lines(log), 8)
        assert time.monotonic() - asked < 5  # poll 100 ms; a heartbeat would take 10 s
        inst = engine.get(iid)
        assert inst.status == "cancelled"
        assert inst.step_results["hold"].status == "cancelled"
        assert "after" not in read_lines(log)
    finally:
        worker.cleanup()
        engine.close()
        gc.collect()


def test_a_cancel_that_races_a_runner_commit_decides_again(db_url: str) -> None:
    """The instance moves waiting -> running between the cancel's read and its commit: the
    cancel re-reads and re-decides, instead of committing with no decision at all."""
    engine = Engine(db_url)
    try:
        engine.register(workflow("race").wait("hold", event="go").task("b", "noop").build())
        inst = engine.execute("race", {})
        assert inst.status == "waiting"
        commit = engine.store.commit_transition
        raced: list[str] = []

        def racing(t: repo.Transition) -> str:
            if t.columns.status == "cancelled" and not raced:
                raced.append(t.instance_id)  # a runner's commit lands first
                moved = repo.Transition(
                    t.instance_id, None, repo.Columns(status="running"), expect_status=("waiting",)
                )
                assert commit(moved) == "running"
            return commit(t)

        engine.store.commit_transition = racing  # type: ignore[method-assign]
        engine.cancel(inst.id)
        assert raced == [inst.id]
        after = engine.get(inst.id)
        assert after.status == "cancelled"
        assert after.step_results["hold"].status == "cancelled"  # was "waiting"
        record = engine.store.get(inst.id)
        assert record is not None and record.state["active"] == []  # was ["hold"]
    finally:
        engine.close()
        gc.collect()


def test_a_cancel_that_races_a_runner_keeping_the_status_decides_again(db_url: str) -> None:
    """A runner commits between the cancel's read and its commit, and the status stays
    ``waiting``: the cancel must not write the state it decided on before that commit."""
    engine = Engine(db_url)
    try:
        engine.register(
            workflow("race-seq").wait("hold", event="go").wait("second", event="go2").build()
        )
        inst = engine.execute("race-seq", {})
        commit = engine.store.commit_transition
        raced: list[str] = []

        def racing(t: repo.Transition) -> str:
            if t.columns.status == "cancelled" and not raced:
                raced.append(t.instance_id)  # the runner takes "go" first: hold completes
                engine.send_event(t.instance_id, "go", {"ok": 1})
                engine.run_due()
                assert engine.get(t.instance_id).status == "waiting"
            return commit(t)

        engine.store.commit_transition = racing  # type: ignore[method-assign]
        engine.cancel(inst.id)
        assert raced == [inst.id]
        after = engine.get(inst.id)
        assert after.status == "cancelled"
        assert after.step_results["hold"].status == "completed"  # was overwritten: cancelled
        assert after.step_results["hold"].output == {"ok": 1}
        assert after.step_results["second"].status == "cancelled"  # was left waiting
    finally:
        engine.close()
        gc.collect()


# -- the deadline across a restart ------------------------------------------------------------


def test_a_deadline_that_passed_while_no_process_ran_applies_on_the_next_claim(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "stop.log"
    first = Proc.program("stop_worker", ["deadline", db_url, str(log)], tmp_path, "first")
    try:
        wait_until("the step runs", lambda: "slow" in read_lines(log), 30)
        first.sigkill()  # the process dies mid-step, before the workflow's deadline
    finally:
        first.cleanup()
    engine = Engine(db_url, lease="1s")
    try:
        engine.register(stop_worker.definitions(log))
        time.sleep(stop_worker.DEADLINE_SECONDS + 0.5)  # the deadline passes while none runs
        engine.run_due()
        inst = engine.get(stop_worker.DEADLINE_ID)
        assert inst.status == "timed_out"
        assert read_lines(log).count("slow") == 1  # not run again after the deadline
        assert "after" not in read_lines(log)
        assert inst.step_results["slow"].status == "cancelled"
    finally:
        engine.close()
        gc.collect()


def test_an_event_sent_after_a_deadline_that_passed_while_no_process_ran_is_too_late(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "stop.log"
    first = Proc.program("stop_worker", ["wait", db_url, str(log)], tmp_path, "first")
    try:
        assert first.wait(60) == 0, first.describe()  # it exits with the instance waiting
    finally:
        first.cleanup()
    engine = Engine(db_url)
    try:
        engine.register(stop_worker.definitions(log))
        time.sleep(stop_worker.DEADLINE_SECONDS + 0.5)  # the deadline passes while none runs
        engine.send_event(stop_worker.WAIT_ID, "go", {"late": True})
        engine.run_due()
        inst = engine.get(stop_worker.WAIT_ID)
        assert inst.status == "timed_out"
        assert inst.step_results["approve"].status == "cancelled"  # was completed
        types = [h.type for h in engine.history(inst.id)]
        assert "workflow.step.completed" not in types
        assert types[-1] == "workflow.timed_out"
        assert "after" not in read_lines(log)
    finally:
        engine.close()
        gc.collect()
