"""Group commit and batch claims (real clock, SQLite and Postgres): many instances share commits,
each transition stays fenced on its own lease, and nothing is recorded twice or lost."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from statemachine import Engine, workflow
from statemachine.errors import LeaseLost, StoreRefused
from statemachine.store import repository as repo
from statemachine.store.committer import Committer
from tests.integration import leasetime

STEPS = 5


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    yield eng
    eng.close()
    gc.collect()


class Counted:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, data: Any, ctx: Any) -> Any:
        with self.lock:
            self.calls[ctx.idempotency_key] += 1
        return {"n": data["n"] if isinstance(data, dict) and "n" in data else data}


def _register(engine: Engine, handler: Any, name: str = "grouped") -> None:
    builder = workflow(name)
    for i in range(STEPS):
        builder = builder.task(f"s{i}", handler)
    engine.register(builder.build())


def test_a_worker_with_many_instances_shares_commits_and_records_each_step_once(
    engine: Engine,
) -> None:
    handler = Counted()
    _register(engine, handler)
    ids = [engine.start("grouped", {"n": i}) for i in range(60)]
    before = engine.repo.committer.batches, engine.repo.committer.committed
    with engine.worker(concurrency=60, poll_interval="20ms"):
        finished = [engine.wait(iid, timeout=60) for iid in ids]
    assert {inst.status for inst in finished} == {"completed"}
    for inst in finished:
        assert [inst.step_results[f"s{i}"].attempts for i in range(STEPS)] == [1] * STEPS
        assert inst.output == {"n": inst.input["n"]}
        completed = [h.step for h in engine.history(inst.id) if h.type.endswith("step.completed")]
        assert completed == [f"s{i}" for i in range(STEPS)]
    assert len(handler.calls) == 60 * STEPS and set(handler.calls.values()) == {1}
    batches = engine.repo.committer.batches - before[0]
    committed = engine.repo.committer.committed - before[1]
    assert committed >= 60 * STEPS  # every transition went through the committer
    assert committed / batches > 1.5, f"{committed} transitions in {batches} commits"


def test_a_worker_with_one_instance_in_flight_counts_it_once_and_commits_inline(
    engine: Engine,
) -> None:
    """Group commit is for many runners: one alone writes on its own thread, skipping the hop
    to the committer thread (and its wait for a batch to form)."""
    seen: list[int] = []

    def look(data: Any) -> Any:
        seen.append(engine.services.local.active_runners)
        return data

    _register(engine, look, name="alone")
    submitted: list[str] = []
    submit = engine.repo.committer.submit

    def counted(t: repo.Transition) -> Any:
        submitted.append(t.instance_id)
        return submit(t)

    engine.repo.committer.submit = counted  # type: ignore[method-assign]
    iid = engine.start("alone", {"n": 1})
    with engine.worker(concurrency=4, poll_interval="20ms"):
        assert engine.wait(iid, timeout=30).status == "completed"
    assert seen == [1] * STEPS
    assert submitted == []
    assert engine.services.local.active_runners == 0


def _transition(rec: repo.InstanceRecord, epoch: int, step: str) -> repo.Transition:
    now = rec.created_at
    values = {
        "status": "running", "state": {"active": [step]}, "current_step": step, "output": None,
        "error": None, "wake_at": None, "started_at": now, "completed_at": None, "updated_at": now,
        "lease_expires_at": now + timedelta(seconds=30),
    }  # fmt: skip
    return repo.Transition(
        rec.id,
        epoch,
        repo.Columns(**values),
        [repo.StepWrite(step, "running", input={"x": 1}, attempts=1, started_at=now)],
        [repo.HistoryWrite("workflow.step.started", step, {}, now)],
    )


def _one_batch(committer: Committer, *ts: repo.Transition) -> list[str | BaseException]:
    """Each transition's outcome, all queued before the committer may take any: one batch."""

    async def submit() -> list[str | BaseException]:
        with committer._cv:  # hold the queue: all land in one group commit
            futures = [committer.submit(t) for t in ts]
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)

    return asyncio.run(submit())


def test_a_stale_transition_fails_alone_in_its_batch(engine: Engine) -> None:
    _register(engine, Counted())
    a, b = engine.start("grouped", {"n": 1}, "gc-a"), engine.start("grouped", {"n": 2}, "gc-b")
    now = engine.clock.now()
    claims = engine.store.claim_due("w1", now, now + timedelta(seconds=1), 10)
    epochs = {rec.id: epoch for epoch, _, rec in claims}
    assert set(epochs) == {a, b}
    # b's lease expires and another worker takes it: w1's epoch for b is now stale
    later = now + timedelta(seconds=5)
    leasetime.lapse(engine, 5)  # Postgres: the database's clock moves on too
    stolen = engine.store.claim_due("w2", later, later + timedelta(seconds=30), 10)
    assert [(rec.id, recovered) for _, recovered, rec in stolen] == [(a, True), (b, True)]
    engine.store.release(a, stolen[0][0])
    engine.store.claim_due("w1", later, later + timedelta(seconds=30), 10)  # a again, not b
    rec_a, rec_b = engine.store.get(a), engine.store.get(b)
    assert rec_a is not None and rec_a.lease_owner == "w1"
    assert rec_b is not None and rec_b.lease_owner == "w2"
    committer = engine.repo.committer
    batches = committer.batches
    ok, stale = _one_batch(
        committer, _transition(rec_a, rec_a.lease_epoch, "s0"), _transition(rec_b, epochs[b], "s0")
    )
    assert ok == "running"
    assert isinstance(stale, LeaseLost)
    assert committer.batches == batches + 1
    assert "s0" in engine.get(a).step_results
    assert engine.get(b).step_results == {} and engine.get(b).status == "pending"
    assert [h.type for h in engine.history(b)] == ["workflow.started"]


def test_claim_due_takes_only_due_unleased_instances_and_blames_no_idle_one(
    engine: Engine,
) -> None:
    _register(engine, Counted())
    ids = [engine.start("grouped", {"n": i}, f"cd-{i}") for i in range(3)]
    now = engine.clock.now()
    first = engine.store.claim_due("w1", now, now + timedelta(seconds=30), 2)
    assert len(first) == 2 and all(not recovered for _, recovered, _ in first)
    assert all(epoch == rec.lease_epoch == 1 for epoch, _, rec in first)
    rest = engine.store.claim_due("w2", now, now + timedelta(seconds=30), 10)
    assert [rec.id for _, _, rec in rest] == [i for i in ids if i not in {r.id for *_, r in first}]
    assert engine.store.claim_due("w3", now, now + timedelta(seconds=30), 10) == []
    later = now + timedelta(seconds=31)
    leasetime.lapse(engine, 31)
    taken = engine.store.claim_due("w3", later, later + timedelta(seconds=30), 10)
    assert len(taken) == 3 and all(recovered for _, recovered, _ in taken)
    for epoch, _, rec in taken:
        stored = engine.store.get(rec.id)
        assert stored is not None
        # recovered, but no handler of theirs was running when w1 and w2 "died": not blamed
        assert (stored.lease_owner, stored.lease_epoch) == ("w3", epoch)
        assert (stored.recoveries, stored.crashes) == (0, 0)
        assert epoch == 2


def test_a_transition_the_database_refuses_does_not_sink_its_batch(engine: Engine) -> None:
    _register(engine, Counted())
    a, b = engine.start("grouped", {"n": 1}, "gc-ok"), engine.start("grouped", {"n": 2}, "gc-bad")
    now = engine.clock.now()
    epochs = {
        rec.id: epoch
        for epoch, _, rec in engine.store.claim_due("w1", now, now + timedelta(seconds=30), 10)
    }
    rec_a, rec_b = engine.store.get(a), engine.store.get(b)
    assert rec_a is not None and rec_b is not None
    bad = _transition(rec_b, epochs[b], "s0")
    bad.steps[0].status = None  # type: ignore[assignment]  # NOT NULL: the database refuses it
    committer = engine.repo.committer
    ok, refused = _one_batch(committer, _transition(rec_a, epochs[a], "s0"), bad)
    assert ok == "running"
    assert isinstance(refused, StoreRefused) and "refused the data" in str(refused)  # not retried
    assert engine.get(a).step_results["s0"].status == "running"
    after = engine.store.get(b)
    assert after is not None and after.status == "pending" and after.state == rec_b.state
    assert [h.type for h in engine.history(b)] == ["workflow.started"]


def test_one_transition_may_write_a_path_twice_and_the_last_row_wins(engine: Engine) -> None:
    """Two map items' steps both show at the same plain path: on Postgres the transition is one
    statement, whose upsert may not touch a row twice, so the rows are merged first."""
    _register(engine, Counted())
    iid = engine.start("grouped", {"n": 1}, "gc-twice")
    now = engine.clock.now()
    ((epoch, _, rec),) = engine.store.claim_due("w1", now, now + timedelta(seconds=30), 10)
    t = _transition(rec, epoch, "s0")
    t.steps.append(repo.StepWrite("s0", "completed", input={"x": 2}, output="last", attempts=1))
    t.history.append(repo.HistoryWrite("workflow.step.completed", "s0", {"output": "last"}, now))
    assert engine.store.commit_transition(t) == "running"
    stored = engine.get(iid)
    assert stored.step_results["s0"].status == "completed"
    assert stored.step_results["s0"].output == "last" and stored.step_results["s0"].input == {
        "x": 2
    }
    history = engine.history(iid)
    assert [(h.seq, h.type) for h in history] == [
        (1, "workflow.started"), (2, "workflow.step.started"), (3, "workflow.step.completed"),
    ]  # fmt: skip
    assert history[2].data == {"output": "last"}


def test_a_stale_transition_on_its_own_writes_no_rows(engine: Engine) -> None:
    _register(engine, Counted())
    iid = engine.start("grouped", {"n": 1}, "gc-stale")
    now = engine.clock.now()
    ((epoch, _, rec),) = engine.store.claim_due("w1", now, now + timedelta(seconds=30), 10)
    with pytest.raises(LeaseLost):
        engine.store.commit_transition(_transition(rec, epoch + 1, "s0"))
    assert engine.get(iid).step_results == {}
    assert [h.type for h in engine.history(iid)] == ["workflow.started"]


def _claimed(engine: Engine, count: int, prefix: str) -> list[tuple[repo.InstanceRecord, int]]:
    _register(engine, Counted())
    ids = [engine.start("grouped", {"n": i}, f"{prefix}-{i}") for i in range(count)]
    now = engine.clock.now()
    epochs = {
        rec.id: epoch
        for epoch, _, rec in engine.store.claim_due("w1", now, now + timedelta(seconds=30), count)
    }
    records = [engine.store.get(i) for i in ids]
    assert all(r is not None for r in records)
    return [(r, epochs[r.id]) for r in records if r is not None]


def _statements(committer: Committer) -> list[str]:
    """Every statement the committer's connection runs from now on (SQLite)."""
    seen: list[str] = []
    committer._connection().driver_connection.set_trace_callback(seen.append)
    return seen


def test_a_batch_updates_its_instances_in_one_statement_and_numbers_each_history_on(
    sqlite_url: str,
) -> None:
    """The committer thread waits for the GIL after every statement it runs: a batch's fenced
    UPDATEs go in one, and each instance's history still follows on from its own last seq."""
    engine = Engine(sqlite_url)
    try:
        claimed = _claimed(engine, 5, "one")
        for k, (rec, epoch) in enumerate(claimed):  # instances at different history lengths
            for _ in range(k):
                assert engine.store.commit_transition(_transition(rec, epoch, "s0")) == "running"
        batch = []
        for rec, epoch in claimed:
            t = _transition(rec, epoch, "s1")
            t.history.append(repo.HistoryWrite("workflow.step.completed", "s1", {}, rec.created_at))
            batch.append(t)
        committer = engine.repo.committer
        batches = committer.batches
        seen = _statements(committer)
        assert _one_batch(committer, *batch) == ["running"] * 5
        assert committer.batches == batches + 1
        updates = [s for s in seen if s.startswith("UPDATE sm_instance")]
        assert len(updates) == 1, updates
        for k, (rec, _) in enumerate(claimed):
            history = engine.history(rec.id)
            assert [h.seq for h in history] == list(range(1, 4 + k))
            assert [h.type for h in history[-2:]] == [
                "workflow.step.started", "workflow.step.completed",
            ]  # fmt: skip
            assert engine.get(rec.id).step_results["s1"].status == "running"
    finally:
        engine.close()


def test_a_batch_is_split_to_fit_the_connection_parameter_limit(sqlite_url: str) -> None:
    engine = Engine(sqlite_url)
    try:
        claimed = _claimed(engine, 7, "split")
        committer = engine.repo.committer
        conn = committer._connection().driver_connection
        # 15 parameters an UPDATE: 5 in a statement (the 7 step rows' 77 still fit in one)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 80)
        seen = _statements(committer)
        batch = [_transition(rec, epoch, "s0") for rec, epoch in claimed]
        assert _one_batch(committer, *batch) == ["running"] * 7
        updates = [s for s in seen if s.startswith("UPDATE sm_instance")]
        assert [s.count("),") + 1 for s in updates] == [5, 2], updates
        for rec, _ in claimed:
            assert [h.seq for h in engine.history(rec.id)] == [1, 2]
    finally:
        engine.close()


def test_a_pause_refuses_only_its_own_transition_in_a_batch(engine: Engine) -> None:
    (a, epoch_a), (b, epoch_b), (c, epoch_c) = _claimed(engine, 3, "pz")
    engine.pause(b.id)
    committer = engine.repo.committer
    batches = committer.batches
    ts = [
        _transition(rec, epoch, "s0") for rec, epoch in ((a, epoch_a), (b, epoch_b), (c, epoch_c))
    ]
    ts = [replace(t, abort_if_paused=True) for t in ts]
    ok_a, paused, ok_c = _one_batch(committer, *ts)
    assert (ok_a, ok_c) == ("running", "running")
    assert isinstance(paused, repo.InstancePaused)
    assert committer.batches == batches + 1
    assert engine.get(b.id).status == "paused" and engine.get(b.id).step_results == {}
    assert "s0" in engine.get(a.id).step_results and "s0" in engine.get(c.id).step_results


def test_a_batch_of_differently_shaped_transitions_lands_each_on_its_own_instance(
    engine: Engine,
) -> None:
    """Postgres sends a batch's statements pipelined, one shape at a time, and reads the results
    after: each must still go to its own transition, whatever the order of the shapes."""
    claimed = _claimed(engine, 6, "mixed")
    for k, (rec, epoch) in enumerate(claimed[:3]):  # different history lengths to start from
        for _ in range(k + 1):
            assert engine.store.commit_transition(_transition(rec, epoch, "s0")) == "running"
    batch = []
    for k, (rec, epoch) in enumerate(claimed):
        t = _transition(rec, epoch, "s1")
        for n in range(k % 3):  # 1, 2 or 3 history rows: a different statement on Postgres
            t.history.append(repo.HistoryWrite("workflow.progress", "s1", {"n": n}, rec.created_at))
        batch.append(t)
    committer = engine.repo.committer
    batches = committer.batches
    assert _one_batch(committer, *batch) == ["running"] * 6
    assert committer.batches == batches + 1
    for k, (rec, _) in enumerate(claimed):
        history = engine.history(rec.id)
        before = 1 + (k + 1 if k < 3 else 0)
        assert [h.seq for h in history] == list(range(1, before + 1 + 1 + k % 3))
        assert [h.data for h in history[before + 1 :]] == [{"n": n} for n in range(k % 3)]
        assert engine.get(rec.id).step_results["s1"].status == "running"
