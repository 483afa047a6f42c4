"""One writer for every transition (SQLite and Postgres): a runner's, a control call's, one that
gives a lease up or takes it; the columns a transition sets are typed, and whichever it sets,
it takes the same path (a new instance may ride on any of them)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import timedelta

import pytest

from statemachine import Engine, workflow
from statemachine.engine import inputs
from statemachine.errors import LeaseLost
from statemachine.store import repository as repo

LEASE = timedelta(seconds=30)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    eng.register(workflow("w").wait("hold", event="go").build())
    yield eng
    eng.close()
    gc.collect()


def _claimed(engine: Engine, iid: str) -> tuple[repo.InstanceRecord, int]:
    now = engine.clock.now()
    ((epoch, _, rec),) = [
        c for c in engine.store.claim_due("w1", now, now + LEASE, 10) if c[2].id == iid
    ]
    return rec, epoch


def test_a_control_call_is_written_by_the_committer_in_one_commit(engine: Engine) -> None:
    iid = engine.start("w", {})
    committer = engine.repo.committer
    batches = committer.batches
    engine.pause(iid)
    assert committer.batches == batches + 1  # the same writer as a runner's transition
    engine.resume(iid)
    assert committer.batches == batches + 2
    assert [h.type for h in engine.history(iid)][-2:] == ["workflow.paused", "workflow.resumed"]


def test_any_transition_may_carry_a_new_instance(engine: Engine) -> None:
    """A transition that sets only some columns (not a runner's usual ones) still inserts the
    instance it carries in the same commit: there is no second path that refuses it."""
    new = inputs.new_instance(engine.services, "w", {"x": 1}, "born", claim=True)
    now = engine.clock.now()
    note = repo.HistoryWrite("workflow.progress", None, {"n": 1}, now)
    t = repo.Transition(
        "born", 1, repo.Columns(status="running", updated_at=now), history=[note], create=new
    )
    assert engine.store.commit_transition(t) == "running"
    stored = engine.store.get("born")
    assert stored is not None and stored.status == "running" and stored.input == {"x": 1}
    assert [h.type for h in engine.history("born")] == ["workflow.started", "workflow.progress"]
    assert [h.seq for h in engine.history("born")] == [1, 2]


def test_a_fenced_transition_keeps_a_pause_unless_it_ends_the_instance(engine: Engine) -> None:
    iid = engine.start("w", {})
    _, epoch = _claimed(engine, iid)
    engine.store.commit_transition(
        repo.Transition(iid, epoch, repo.Columns(status="running", lease_expires_at=None))
    )
    engine.pause(iid)  # not fenced: the runner's lease (given up above) is not taken
    now = engine.clock.now()
    running = repo.Transition(iid, epoch, repo.Columns(status="waiting", updated_at=now))
    assert engine.store.commit_transition(running) == "paused"  # the pause landed first: kept
    ended = repo.Transition(iid, epoch, repo.Columns(status="failed", completed_at=now))
    assert engine.store.commit_transition(ended) == "failed"


def test_a_fence_takes_the_lease_and_the_holder_next_commit_fails(engine: Engine) -> None:
    iid = engine.start("w", {})
    rec, epoch = _claimed(engine, iid)
    fence = repo.Transition(iid, None, fence=True, expect_status=(rec.status,))
    assert engine.store.commit_transition(fence) == "pending"
    after = engine.store.get(iid)
    assert after is not None and after.lease_epoch == epoch + 1 and after.lease_owner is None
    stale = repo.Transition(iid, epoch, repo.Columns(status="running"))
    with pytest.raises(LeaseLost):
        engine.store.commit_transition(stale)
    unmet = repo.Transition(iid, None, repo.Columns(status="running"), expect_status=("waiting",))
    assert engine.store.commit_transition(unmet) == ""  # a control call's condition failed
    assert engine.store.get(iid).status == "pending"  # type: ignore[union-attr]
