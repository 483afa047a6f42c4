"""Schedules fire from the database: each tick starts exactly one instance however many engines
share it, missed ticks follow ``catchup``, a running previous instance follows ``overlap``."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from statemachine import Engine, WorkflowNotFound, workflow
from statemachine.definition import models
from statemachine.engine import inputs
from statemachine.engine import schedules as scheduling
from statemachine.store.schedules import Tick
from statemachine.testing import ManualClock

HOUR = timedelta(hours=1)


@pytest.fixture
def two(db_url: str, clock: ManualClock) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database, sharing the hand-moved clock."""
    first, second = Engine(db_url, clock=clock), Engine(db_url, clock=clock)
    yield first, second
    first.close()
    second.close()
    gc.collect()


def hourly(
    catchup: models.Catchup = "none", overlap: models.Overlap = "allow"
) -> models.WorkflowDefinition:
    return (
        workflow("hourly")
        .schedule("0 * * * *", input={"kind": "tick"}, overlap=overlap, catchup=catchup)
        .pass_("a", end=True)
        .build()
    )


def waiting(overlap: models.Overlap) -> models.WorkflowDefinition:
    return (
        workflow("hourly")
        .schedule("0 * * * *", overlap=overlap)
        .wait("hold", event="go", end=True)
        .build()
    )


def ids(engine: Engine) -> list[str]:
    return sorted(i.id for i in engine.list(workflow="hourly", limit=1000))


@pytest.mark.parametrize(("catchup", "started"), [("all", 24), ("latest", 1), ("none", 0)])
def test_a_day_missed_follows_catchup_on_two_engines(
    two: tuple[Engine, Engine], clock: ManualClock, catchup: models.Catchup, started: int
) -> None:
    first, second = two
    for engine in two:
        engine.register(hourly(catchup))
    clock.advance(24 * HOUR)
    for _ in range(3):
        first.run_due()
        second.run_due()
    found = ids(first)
    assert len(found) == started
    if catchup == "latest":
        assert found == ["hourly@2030-01-02T00:00:00Z"]
    if catchup == "all":
        assert found[0] == "hourly@2030-01-01T01:00:00Z"
    (info,) = second.schedules()
    assert info.next_at == datetime(2030, 1, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize("catchup", ["all", "latest", "none"])
def test_a_watched_schedule_fires_every_tick_whatever_catchup(
    two: tuple[Engine, Engine], clock: ManualClock, catchup: models.Catchup
) -> None:
    for engine in two:
        engine.register(hourly(catchup))
    for hour in range(24):
        clock.advance(HOUR)
        two[hour % 2].run_due()
        two[(hour + 1) % 2].run_due()
    found = ids(two[0])
    assert len(found) == 24
    assert all(i.status == "completed" for i in two[1].list(workflow="hourly", limit=100))
    assert two[0].get(found[0]).input == {"kind": "tick"}


def test_overlap_skip_starts_nothing_while_the_previous_run_waits(
    engine: Engine, clock: ManualClock
) -> None:
    engine.register(waiting("skip"))
    clock.advance(HOUR)
    engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T01:00:00Z"]
    for _ in range(3):  # it waits for its event: these ticks are skipped
        clock.advance(HOUR)
        engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T01:00:00Z"]
    assert engine.schedules()[0].next_at == datetime(2030, 1, 1, 5, tzinfo=UTC)
    engine.send_event("hourly@2030-01-01T01:00:00Z", "go")
    engine.run_due()
    clock.advance(HOUR)
    engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T01:00:00Z", "hourly@2030-01-01T05:00:00Z"]


def test_overlap_allow_starts_one_beside_the_running_one(
    engine: Engine, clock: ManualClock
) -> None:
    engine.register(waiting("allow"))
    for _ in range(3):
        clock.advance(HOUR)
        engine.run_due()
    assert len(ids(engine)) == 3
    assert {i.status for i in engine.list(workflow="hourly")} == {"waiting"}


def test_overlap_cancel_previous_cancels_then_starts(engine: Engine, clock: ManualClock) -> None:
    engine.register(waiting("cancel_previous"))
    clock.advance(HOUR)
    engine.run_due()
    clock.advance(HOUR)
    engine.run_due()
    first, second = "hourly@2030-01-01T01:00:00Z", "hourly@2030-01-01T02:00:00Z"
    assert ids(engine) == [first, second]
    assert engine.get(first).status == "cancelled"
    assert engine.get(second).status == "waiting"


@pytest.mark.parametrize(
    ("tz", "cron", "start", "expected"),
    [
        ("Europe/Paris", "30 2 * * *", datetime(2030, 3, 30, tzinfo=UTC),
         ["2030-03-30T01:30:00Z", "2030-03-31T01:00:00Z", "2030-04-01T00:30:00Z"]),
        ("America/New_York", "30 2 * * *", datetime(2030, 3, 9, tzinfo=UTC),
         ["2030-03-09T07:30:00Z", "2030-03-10T07:00:00Z", "2030-03-11T06:30:00Z"]),
        ("Europe/Paris", "30 2 * * *", datetime(2030, 10, 26, tzinfo=UTC),
         ["2030-10-26T00:30:00Z", "2030-10-27T00:30:00Z", "2030-10-28T01:30:00Z"]),
        ("America/New_York", "30 1 * * *", datetime(2030, 11, 2, tzinfo=UTC),
         ["2030-11-02T05:30:00Z", "2030-11-03T05:30:00Z", "2030-11-04T06:30:00Z"]),
    ],
)  # fmt: skip
def test_dst_days_start_one_instance(
    db_url: str, tz: str, cron: str, start: datetime, expected: list[str]
) -> None:
    clock = ManualClock(start)
    with Engine(db_url, clock=clock) as engine:
        engine.register(workflow("daily").schedule(cron, timezone=tz).pass_("a", end=True).build())
        for _ in range(72 * 4):  # every 15 minutes for three days
            clock.advance(timedelta(minutes=15))
            engine.run_due()
        found = sorted(i.id for i in engine.list(workflow="daily", limit=100))
    assert found == [f"daily@{t}" for t in expected]


def test_engines_racing_on_one_tick_start_it_once(
    two: tuple[Engine, Engine], clock: ManualClock
) -> None:
    for engine in two:
        engine.register(hourly("none"))
    for _ in range(10):
        clock.advance(HOUR)
        barrier = threading.Barrier(2)
        counts: list[int] = []

        def fire(engine: Engine, barrier: threading.Barrier, counts: list[int]) -> None:
            barrier.wait()
            counts.append(scheduling.fire_due(engine.services))

        threads = [threading.Thread(target=fire, args=(e, barrier, counts)) for e in two]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(counts) == [0, 1]
    assert len(ids(two[0])) == 10
    for iid in ids(two[0]):
        starts = [h for h in two[0].history(iid) if h.type == "workflow.started"]
        assert len(starts) == 1


def test_pause_and_resume(engine: Engine, clock: ManualClock) -> None:
    engine.register(hourly("none"))
    engine.pause_schedule("hourly")
    assert engine.schedules()[0].paused
    clock.advance(3 * HOUR)
    engine.run_due()
    assert ids(engine) == []
    clock.advance(timedelta(minutes=30))
    engine.resume_schedule("hourly")
    (info,) = engine.schedules()
    assert not info.paused and info.next_at == datetime(2030, 1, 1, 4, tzinfo=UTC)
    clock.advance(HOUR)
    engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T04:00:00Z"]
    with pytest.raises(WorkflowNotFound, match="did you mean 'hourly'"):
        engine.pause_schedule("hourli")


def test_resume_with_catchup_latest_starts_the_latest_missed_tick(
    engine: Engine, clock: ManualClock
) -> None:
    engine.register(hourly("latest"))
    engine.pause_schedule("hourly")
    clock.advance(3 * HOUR)
    engine.run_due()
    engine.resume_schedule("hourly")
    engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T03:00:00Z"]


def test_a_new_version_moves_the_schedule(engine: Engine, clock: ManualClock) -> None:
    engine.register(hourly())
    clock.advance(HOUR)
    engine.run_due()
    before = engine.schedules()
    v2 = (
        workflow("hourly", version=2)
        .schedule("0 * * * *", input={"kind": "tick"}, overlap="allow")
        .pass_("a")
        .pass_("b", end=True)
        .build()
    )
    engine.register(v2)
    assert engine.schedules() == before  # the same row: same next tick, same last one
    clock.advance(HOUR)
    engine.run_due()
    assert engine.get("hourly@2030-01-01T01:00:00Z").workflow_version == "1"
    assert engine.get("hourly@2030-01-01T02:00:00Z").definition_hash == v2.hash
    v3 = workflow("hourly", version=3).schedule(every="15m").pass_("a", end=True).build()
    engine.register(v3)
    (info,) = engine.schedules()
    assert info.spec == "every 15m" and info.next_at == datetime(2030, 1, 1, 2, 15, tzinfo=UTC)


def test_unregister_stops_the_schedule(engine: Engine, clock: ManualClock) -> None:
    engine.register(hourly())
    engine.unregister("hourly")
    assert engine.schedules() == []
    clock.advance(3 * HOUR)
    engine.run_due()
    assert ids(engine) == []


def test_a_worker_fires_the_schedule(engine: Engine, clock: ManualClock) -> None:
    engine.register(hourly())
    with engine.worker(poll_interval="50ms"):
        clock.advance(HOUR)
        deadline = threading.Event()
        for _ in range(200):
            found = engine.list(workflow="hourly")
            if found and found[0].status == "completed":
                break
            deadline.wait(0.1)
    assert [i.status for i in engine.list(workflow="hourly")] == ["completed"]


def test_a_claim_on_a_moved_next_at_changes_nothing(engine: Engine, clock: ManualClock) -> None:
    """Compare-and-set: an engine that read ``next_at`` before another fired the tick cannot
    claim it again (nor move the schedule back)."""
    engine.register(hourly())
    (row,) = engine.store.schedules()
    assert row.next_at is not None
    clock.advance(HOUR)
    engine.run_due()
    birth = inputs.new_instance(engine.services, "hourly", None, "hourly@stale")
    stale = Tick(
        "hourly", 0, row.next_at, row.next_at + HOUR, row.next_at, birth, False, clock.now()
    )
    assert engine.store.claim_tick(stale) is None
    assert engine.schedules()[0].next_at == datetime(2030, 1, 1, 2, tzinfo=UTC)
    assert ids(engine) == ["hourly@2030-01-01T01:00:00Z"]


def test_a_tick_whose_instance_cannot_be_written_stays_due(
    engine: Engine, clock: ManualClock
) -> None:
    """The claim and the insert are one transaction: the insert failing takes the claim back."""
    engine.register(hourly())
    (row,) = engine.store.schedules()
    assert row.next_at is not None
    clock.advance(HOUR)
    birth = inputs.new_instance(engine.services, "hourly", None, "hourly@broken")
    birth.values["input"] = object()  # no JSON: the INSERT fails after the claim's UPDATE
    tick = Tick(
        "hourly", 0, row.next_at, row.next_at + HOUR, row.next_at, birth, False, clock.now()
    )
    with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises
        engine.store.claim_tick(tick)
    assert engine.schedules()[0].next_at == row.next_at
    engine.run_due()
    assert ids(engine) == ["hourly@2030-01-01T01:00:00Z"]


def test_a_new_version_without_schedules_stops_them(engine: Engine, clock: ManualClock) -> None:
    engine.register(hourly())
    engine.register(workflow("hourly", version=2).pass_("a", end=True).build())
    assert engine.schedules() == []
    clock.advance(3 * HOUR)
    engine.run_due()
    assert ids(engine) == []
