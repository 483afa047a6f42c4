"""Time: retries and their backoff, step timeouts, durable waits, workflow timeouts.

Every timer reads the engine's clock; with a ManualClock nothing sleeps and a NEW engine on the
same database carries on where the closed one stopped.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from statemachine import (
    CriticalError,
    Engine,
    RetryPolicy,
    StepContext,
    WorkflowDefinition,
    load_yaml,
    workflow,
)
from statemachine.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


def _types(engine: Engine, iid: str) -> list[str]:
    return [h.type for h in engine.history(iid)]


# -- retries -------------------------------------------------------------------------------


class Flaky:
    """Fails the first ``failures`` calls, then succeeds; records every ctx it saw."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, str]] = []

    def __call__(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        self.calls.append((ctx.attempt, ctx.idempotency_key))
        if len(self.calls) <= self.failures:
            raise ConnectionError(f"boom {len(self.calls)}")
        return {"ok": True, "attempt": ctx.attempt}


def _retry_flow(flaky: Flaky) -> WorkflowDefinition:
    return (
        workflow("retrying")
        .task("before", lambda x: {"before": True})
        .task(
            "flaky",
            flaky,
            retry=RetryPolicy(max_attempts=4, interval="10s", backoff_rate=2, max_interval="30s"),
        )
        .task("after", lambda x: {"after": x})
        .build()
    )


def test_retry_backoff_survives_a_new_engine(db_url: str) -> None:
    flaky = Flaky(failures=3)
    clock = ManualClock(START)
    first = Engine(db_url, clock=clock)
    try:
        first.register(_retry_flow(flaky))
        inst = first.execute("retrying", {"x": 1}, instance_id="r-1")
        assert inst.status == "waiting"
        step = inst.step_results["flaky"]
        assert step.attempts == 1
        assert step.error is not None and "boom 1" in str(step.error.get("message"))
        assert step.next_attempt_at == START + timedelta(seconds=10)
    finally:
        first.close()
        gc.collect()

    clock2 = ManualClock(START)
    second = Engine(db_url, clock=clock2)
    try:
        second.register(_retry_flow(flaky))
        # the backoff is not skipped by a restart
        assert second.run_due() == 0
        clock2.advance("9s")
        assert second.run_due() == 0
        assert second.get("r-1").step_results["flaky"].attempts == 1
        assert len(flaky.calls) == 1

        clock2.advance("1s")  # t = 10s: attempt 2, fails, next in 20s
        second.run_due()
        step = second.get("r-1").step_results["flaky"]
        assert step.attempts == 2  # the retry count was not reset
        assert step.next_attempt_at == START + timedelta(seconds=30)

        clock2.advance("19s")
        assert second.run_due() == 0
        clock2.advance("1s")  # t = 30s: attempt 3, fails, next in 40s capped at 30s
        second.run_due()
        step = second.get("r-1").step_results["flaky"]
        assert step.attempts == 3
        assert step.next_attempt_at == START + timedelta(seconds=60)

        clock2.advance("30s")  # t = 60s: attempt 4 succeeds
        second.run_due()
        inst = second.get("r-1")
        assert inst.status == "completed"
        assert inst.output == {"after": {"ok": True, "attempt": 4}}
        assert inst.step_results["flaky"].attempts == 4
        assert inst.step_results["flaky"].status == "completed"
        assert inst.step_results["before"].attempts == 1
        assert [a for a, _ in flaky.calls] == [1, 2, 3, 4]
        assert len({k for _, k in flaky.calls}) == 1  # one idempotency key across retries
        history = second.history("r-1")
        retries = [h for h in history if h.type == "workflow.step.retry"]
        assert [h.step for h in retries] == ["flaky"] * 3
        assert [h.data.get("delay") for h in retries] == [10, 20, 30]
        assert [h.type for h in history].count("workflow.step.completed") == 3
    finally:
        second.close()
        gc.collect()


def test_retries_exhausted_fail_the_instance(engine: Engine, clock: ManualClock) -> None:
    flaky = Flaky(failures=100)
    after: list[Any] = []
    engine.register(
        workflow("exhaust")
        .default_retry(max_attempts=3, interval="1s", backoff_rate=3, max_interval="1m")
        .task("flaky", flaky)
        .task("after", lambda x: after.append(x))
        .build()
    )
    inst = engine.execute("exhaust", {})
    assert inst.status == "waiting"
    clock.advance("1s")
    engine.run_due()
    assert engine.get(inst.id).step_results["flaky"].next_attempt_at == clock.now() + timedelta(
        seconds=3
    )
    clock.advance("3s")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "failed"
    assert inst.step_results["flaky"].status == "failed"
    assert inst.step_results["flaky"].attempts == 3
    assert inst.error is not None
    assert "boom 3" in str(inst.error.get("message")) or "boom 3" in str(inst.error)
    assert after == []
    assert len(flaky.calls) == 3
    clock.advance("1d")
    assert engine.run_due() == 0
    assert len(flaky.calls) == 3
    assert _types(engine, inst.id)[-1] == "workflow.failed"


def test_max_interval_caps_every_delay_the_first_included(
    engine: Engine, clock: ManualClock
) -> None:
    flaky = Flaky(failures=2)
    engine.register(
        workflow("capped")
        .task("flaky", flaky, retry=RetryPolicy(max_attempts=3, interval=10, max_interval=5))
        .build()
    )
    inst = engine.execute("capped", {})
    assert inst.step_results["flaky"].next_attempt_at == START + timedelta(seconds=5)
    clock.advance("5s")
    engine.run_due()
    inst = engine.get(inst.id)
    assert len(flaky.calls) == 2
    assert inst.step_results["flaky"].next_attempt_at == START + timedelta(seconds=10)
    clock.advance("5s")
    engine.run_due()
    assert engine.get(inst.id).status == "completed"
    delays = [h.data["delay"] for h in engine.history(inst.id) if h.type == "workflow.step.retry"]
    assert delays == [5.0, 5.0]


def test_a_yaml_retry_delay_over_the_default_cap_is_still_the_first_delay(
    engine: Engine, clock: ManualClock
) -> None:
    flaky = Flaky(failures=1)
    engine.action("flaky")(flaky)
    engine.register(
        load_yaml(
            """
id: slow-retry
steps:
  - id: call
    action: flaky
    maxRetries: 1
    retryDelay: 1m         # longer than the default maxInterval (30s): still 1m
"""
        )
    )
    inst = engine.execute("slow-retry", {})
    assert inst.step_results["call"].next_attempt_at == START + timedelta(minutes=1)


def test_critical_error_is_never_retried(engine: Engine, clock: ManualClock) -> None:
    calls: list[int] = []

    def fatal(data: Any, ctx: StepContext) -> None:
        calls.append(ctx.attempt)
        raise CriticalError("card stolen")

    engine.register(
        workflow("critical")
        .task("fatal", fatal, retry=RetryPolicy(max_attempts=5, interval="1s"))
        .build()
    )
    inst = engine.execute("critical", {})
    assert inst.status == "failed"
    assert calls == [1]
    step = inst.step_results["fatal"]
    assert step.status == "failed"
    assert step.attempts == 1
    assert step.error is not None
    assert step.error["type"] == "CriticalError"
    assert "card stolen" in step.error["message"]
    assert "workflow.step.retry" not in _types(engine, inst.id)
    clock.advance("1h")
    engine.run_due()
    assert calls == [1]


def test_retry_on_limits_which_errors_are_retried(engine: Engine) -> None:
    calls: list[int] = []

    def picky(data: Any, ctx: StepContext) -> None:
        calls.append(ctx.attempt)
        raise KeyError("not retryable")

    engine.register(
        workflow("picky")
        .task(
            "picky",
            picky,
            retry=RetryPolicy(max_attempts=5, interval="1s", retry_on=(ConnectionError,)),
        )
        .build()
    )
    inst = engine.execute("picky", {})
    assert inst.status == "failed"
    assert calls == [1]


def test_no_policy_means_one_try(engine: Engine) -> None:
    flaky = Flaky(failures=1)
    engine.register(workflow("once").task("flaky", flaky).build())
    inst = engine.execute("once", {})
    assert inst.status == "failed"
    assert inst.step_results["flaky"].attempts == 1
    assert len(flaky.calls) == 1


def test_step_timeout_records_step_timeout_error(engine: Engine) -> None:
    started = time.monotonic()

    async def sleepy(data: Any) -> str:
        await asyncio.sleep(5)
        return "too late"

    after: list[Any] = []
    engine.register(
        workflow("slow")
        .task("sleepy", sleepy, timeout="200ms")
        .task("after", lambda x: after.append(x))
        .build()
    )
    inst = engine.execute("slow", {})
    assert time.monotonic() - started < 4
    assert inst.status == "failed"
    step = inst.step_results["sleepy"]
    assert step.status == "failed"
    assert step.error is not None
    assert step.error["type"] == "StepTimeoutError"
    assert "sleepy" in step.error["message"]
    assert after == []


def test_sync_step_timeout(engine: Engine) -> None:
    def blocking(data: Any) -> str:
        time.sleep(1.5)
        return "too late"

    engine.register(workflow("slow-sync").task("blocking", blocking, timeout="200ms").build())
    started = time.monotonic()
    inst = engine.execute("slow-sync", {})
    assert time.monotonic() - started < 1.4  # the instance does not wait for the thread
    assert inst.status == "failed"
    assert inst.step_results["blocking"].error is not None
    assert inst.step_results["blocking"].error["type"] == "StepTimeoutError"
    assert inst.step_results["blocking"].output is None


def test_timeout_error_raised_by_a_handler_is_its_own_error(engine: Engine) -> None:
    calls: list[int] = []

    def remote(data: Any, ctx: StepContext) -> None:
        calls.append(ctx.attempt)
        raise TimeoutError("the gateway did not answer")

    engine.register(
        workflow("handler-timeout")
        .task(
            "remote",
            remote,
            retry=RetryPolicy(max_attempts=3, interval="1s", retry_on=(ConnectionError,)),
        )
        .build()
    )
    inst = engine.execute("handler-timeout", {})
    error = inst.step_results["remote"].error
    assert error is not None
    assert error["type"] == "TimeoutError"
    assert "the gateway did not answer" in error["message"]
    assert calls == [1]  # retry_on names ConnectionError only
    assert inst.status == "failed"


def test_step_timeout_is_retried_under_a_policy(engine: Engine, clock: ManualClock) -> None:
    calls: list[int] = []

    async def sometimes_slow(data: Any, ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.sleep(5)
        return "fast"

    engine.register(
        workflow("slow-retry")
        .task(
            "s",
            sometimes_slow,
            timeout="200ms",
            retry=RetryPolicy(max_attempts=2, interval="5s"),
        )
        .build()
    )
    inst = engine.execute("slow-retry", {})
    assert inst.status == "waiting"
    assert inst.step_results["s"].error is not None
    assert inst.step_results["s"].error["type"] == "StepTimeoutError"
    clock.advance("5s")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "completed"
    assert inst.output == "fast"
    assert calls == [1, 2]


def test_yaml_max_retries_and_retry_delay(db_url: str) -> None:
    definition = load_yaml(
        """
id: yaml-retry
steps:
  - id: charge
    action: chargeCard
    maxRetries: 2          # 3 attempts at most
    retryDelay: 10s        # then 20s
  - id: done
    type: pass
"""
    )
    attempts: list[int] = []

    def charge(data: Any, ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("gateway")
        return "charged"

    clock = ManualClock(START)
    engine = Engine(db_url, clock=clock)
    try:
        engine.action("chargeCard")(charge)
        engine.register(definition)
        inst = engine.execute("yaml-retry", {})
        assert inst.step_results["charge"].next_attempt_at == START + timedelta(seconds=10)
        clock.advance("10s")
        engine.run_due()
        inst = engine.get(inst.id)
        assert inst.step_results["charge"].next_attempt_at == START + timedelta(seconds=30)
        clock.advance("20s")
        engine.run_due()
        inst = engine.get(inst.id)
        assert inst.status == "completed"
        assert inst.output == "charged"
        assert attempts == [1, 2, 3]
    finally:
        engine.close()
        gc.collect()


# -- polls ---------------------------------------------------------------------------------


def test_a_poll_check_returning_another_shape_fails_instead_of_ending_the_poll(
    engine: Engine, clock: ManualClock
) -> None:
    after: list[Any] = []
    engine.register(
        workflow("poll-shape")
        .poll("job", check=lambda data: {"status": "pending"}, interval="1m", max_attempts=5)
        .task("after", lambda x: after.append(x))
        .build()
    )
    inst = engine.execute("poll-shape", {})
    assert inst.status == "failed"
    assert inst.step_results["job"].status == "failed"
    assert inst.error is not None
    assert inst.error["type"] == "InvalidPollResult"
    assert '{"status": "pending"}' in inst.error["message"]
    assert after == []


# -- durable waits -------------------------------------------------------------------------


def _onboarding(sent: list[tuple[str, str]]) -> WorkflowDefinition:
    def send(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        sent.append((ctx.step_name, data["template"]))
        return {"sent": data["template"]}

    return (
        workflow("onboard")
        .task("welcome", send, input=lambda prev, wf: {"to": wf["email"], "template": "welcome"})
        .wait("wait-3-days", duration="3d")
        .task("tips", send, input=lambda prev, wf: {"to": wf["email"], "template": "tips"})
        .build()
    )


def test_three_day_wait_survives_a_restart(db_url: str) -> None:
    sent: list[tuple[str, str]] = []
    first = Engine(db_url, clock=ManualClock(START))
    try:
        first.register(_onboarding(sent))
        inst = first.execute("onboard", {"email": "a@x.io"}, instance_id="onb-1")
        assert inst.status == "waiting"
        assert inst.step_results["wait-3-days"].status == "waiting"
        assert "tips" not in inst.step_results or inst.step_results["tips"].status == "pending"
        assert sent == [("welcome", "welcome")]
    finally:
        first.close()
        gc.collect()

    clock = ManualClock(START)
    second = Engine(db_url, clock=clock)
    try:
        second.register(_onboarding(sent))
        assert second.run_due() == 0
        clock.advance(timedelta(days=3) - timedelta(seconds=1))
        assert second.run_due() == 0  # one second early: nothing
        assert second.get("onb-1").status == "waiting"
        assert sent == [("welcome", "welcome")]
        clock.advance(1)
        assert second.run_due() == 1
        inst = second.get("onb-1")
        assert inst.status == "completed"
        assert inst.output == {"sent": "tips"}
        assert sent == [("welcome", "welcome"), ("tips", "tips")]
        assert inst.step_results["wait-3-days"].status == "completed"
        assert inst.completed_at == START + timedelta(days=3)
    finally:
        second.close()
        gc.collect()


def test_yaml_onboarding_wait(db_url: str) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    mails: list[dict[str, Any]] = []
    definition = load_yaml(root / "definitions" / "onboarding.yaml")

    def send_email(data: dict[str, Any]) -> dict[str, Any]:
        mails.append(data)
        return {"ok": True}

    first = Engine(db_url, clock=ManualClock(START))
    try:
        first.action("sendEmail")(send_email)
        first.register(definition)
        assert first.execute("onboarding", {"email": "b@x.io"}, "y-1").status == "waiting"
    finally:
        first.close()
        gc.collect()
    clock = ManualClock(START + timedelta(days=3))
    second = Engine(db_url, clock=clock)
    try:
        second.action("sendEmail")(send_email)
        # only the actions: the running version is read back from the database
        assert second.run_due() == 1
        assert second.get("y-1").status == "completed"
        assert mails == [
            {"to": "b@x.io", "template": "welcome"},
            {"to": "b@x.io", "template": "tips"},
        ]
    finally:
        second.close()
        gc.collect()


def test_wait_until_a_time(engine: Engine, clock: ManualClock) -> None:
    engine.register(
        workflow("until")
        .wait("w", until=START + timedelta(hours=5))
        .pass_("done", result={"ok": 1})
        .build()
    )
    inst = engine.execute("until", {})
    assert inst.status == "waiting"
    clock.advance("4h59m")
    assert engine.run_due() == 0
    clock.advance("1m")
    engine.run_due()
    assert engine.get(inst.id).status == "completed"
    assert engine.get(inst.id).output == {"ok": 1}


def test_event_wait_timeout(engine: Engine, clock: ManualClock) -> None:
    engine.register(workflow("ev-timeout").wait("w", event="approved", timeout="1h").build())
    inst = engine.execute("ev-timeout", {})
    assert inst.status == "waiting"
    clock.advance("1h")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "failed"
    assert inst.step_results["w"].error is not None
    assert inst.step_results["w"].error["type"] == "StepTimeoutError"


# -- workflow timeout ----------------------------------------------------------------------


def test_workflow_timeout(engine: Engine, clock: ManualClock) -> None:
    late: list[Any] = []
    timed_out: list[dict[str, Any]] = []
    engine.on("workflow.timed_out", timed_out.append)
    engine.register(
        workflow("deadline")
        .timeout("1h")
        .task("a", lambda x: "a")
        .wait("long", duration="2h")
        .task("b", lambda x: late.append(x))
        .build()
    )
    inst = engine.execute("deadline", {})
    assert inst.status == "waiting"
    clock.advance("59m")
    assert engine.run_due() == 0
    assert engine.get(inst.id).status == "waiting"
    clock.advance("1m")
    engine.run_due()
    inst = engine.get(inst.id)
    assert inst.status == "timed_out"
    assert inst.completed_at == START + timedelta(hours=1)
    assert inst.error is not None
    assert len(timed_out) == 1
    clock.advance("2h")
    assert engine.run_due() == 0
    assert late == []
    assert _types(engine, inst.id)[-1] == "workflow.timed_out"
    assert engine.get(inst.id).status == "timed_out"
