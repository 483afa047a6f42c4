"""The event feed across processes: ``serve --no-worker`` streams what a separate
``statemachine worker`` writes (it shares only the database), in order, with ``id:`` cursors
that ``Last-Event-ID`` resumes from: nothing lost, nothing twice (SQLite and Postgres)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from statemachine import workflow
from tests.serving import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-7", "items": ["a"], "amount": 10, "email": "ada@example.com"}
JSON = {"Content-Type": "application/json"}

Message = tuple[str, str, dict[str, Any]]  # id, event, data


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("STATEMACHINE_TOKEN", "STATEMACHINE_DB")
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def app_options(db_url: str) -> list[str]:
    return [
        "--db",
        db_url,
        "--definitions",
        "definitions",
        "--actions",
        "examples.actions:ShopActions",
    ]


def read_sse(
    res: httpx.Response, until: Callable[[list[Message]], bool], timeout: float = 60
) -> list[Message]:
    """SSE messages as (id, event, data) until ``until`` says stop."""
    deadline = time.monotonic() + timeout
    found: list[Message] = []
    mid, kind, data = "", "message", ""
    for line in res.iter_lines():
        assert time.monotonic() < deadline, f"no end of stream after {timeout}s: {found}"
        field, _, value = line.partition(":")
        value = value.strip()
        if field == "id":
            mid = value
        elif field == "event":
            kind = value
        elif field == "data":
            data += value
        elif not line and data:
            found.append((mid, kind, json.loads(data)))
            if until(found):
                return found
            mid, kind, data = "", "message", ""
    raise AssertionError(f"the stream ended early: {found}")


def all_completed(ids: list[str]) -> Callable[[list[Message]], bool]:
    def done(found: list[Message]) -> bool:
        ended = {d["instance_id"] for _, kind, d in found if kind == "workflow.completed"}
        return set(ids) <= ended

    return done


@pytest.mark.timeout(150)
def test_streams_carry_a_separate_workers_history_and_resume_after_last_event_id(
    db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", *app_options(db_url), "--create", "--no-worker", "--port", str(port)]
    with (
        process(serve, tmp_path / "serve.log") as server,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        wait_until_up(server, url, tmp_path / "serve.log")
        first: list[Message] = []
        with client.stream("GET", "/api/stream") as res:  # starts now: before any instance
            assert res.status_code == 200
            ids = []
            for n in range(3):
                body = {"input": {**ORDER, "order_id": f"o-{n}"}}
                started = client.post("/api/workflows/order-processing/instances", json=body)
                assert started.status_code == 201, started.text
                ids.append(started.json()["id"])
            worker = ["worker", *app_options(db_url)]
            with process(worker, tmp_path / "worker.log") as running:
                # drop the connection mid-run, then resume where it stopped
                first = read_sse(res, lambda found: len(found) == 7)
                res.close()
                resume = {"Last-Event-ID": first[-1][0]}
                with client.stream("GET", "/api/stream", headers=resume) as again:
                    rest = read_sse(again, all_completed(ids))
                assert running.poll() is None, (tmp_path / "worker.log").read_text()

        # the instance stream resumes the same way, its cursor the entry's seq
        history = client.get(f"/api/instances/{ids[0]}/history").json()
        path = f"/api/instances/{ids[0]}/stream"
        with client.stream("GET", path, headers={"Last-Event-ID": "3"}) as res:
            replay = read_sse(res, all_completed(ids[:1]))
        want = []
        for iid in ids:  # the whole history, read after the run
            want += [
                (iid, h["seq"], h["type"])
                for h in client.get(f"/api/instances/{iid}/history").json()
            ]

    streamed = first + rest
    cursors = [int(mid) for mid, _, _ in streamed]
    assert cursors == sorted(set(cursors)), cursors  # in order, none twice
    assert all(kind == data["type"] for _, kind, data in streamed)
    got = [(d["instance_id"], d["seq"], d["type"]) for _, _, d in streamed]
    assert sorted(got) == sorted(want)  # every entry of every instance, none lost
    for iid in ids:  # and each instance's entries in its own order
        assert [s for i, s, _ in got if i == iid] == sorted(s for i, s, _ in got if i == iid)
    assert {d["workflow_name"] for _, _, d in streamed} == {"order-processing"}

    assert [int(mid) for mid, _, _ in replay] == [h["seq"] for h in history if h["seq"] > 3]
    assert [d["type"] for _, _, d in replay] == [h["type"] for h in history if h["seq"] > 3]


def read_some(feed: Any, timeout: float = 20) -> list[Any]:
    """The feed's next entries, once there are some: a gap is final once every transaction
    of the (shared, busy) Postgres server that was running when it was seen has ended."""
    deadline = time.monotonic() + timeout
    while not (rows := feed.read()):
        assert time.monotonic() < deadline, "the feed never moved on"
        time.sleep(0.05)
    return list(rows)


def test_a_feed_waits_for_a_transaction_that_commits_out_of_order(db_url: str) -> None:
    """Postgres numbers a row when it is written, not when it commits: a reader that saw row
    N+1 before row N must not skip N. It waits on the gap until the writer commits (then
    streams N, N+1) or ends (a rolled-back row: the gap is final, the reader moves on)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: rows commit in the order they are numbered")
    from statemachine import Engine
    from statemachine.store.feed import Feed

    with Engine(db_url) as engine:
        engine.register(workflow("w").pass_("a").build())
        a, b = engine.start("w", {}), engine.start("w", {})
        repo = engine.repo
        feed = Feed(repo, None, repo.history_end(None))

        def write(conn: sa.Connection, iid: str, type_: str) -> None:
            # as the engine does: the instance row first (the transaction takes its id), then history
            seq = conn.execute(
                sa.text(
                    "UPDATE sm_instance SET history_seq = history_seq + 1 WHERE id = :i "
                    "RETURNING history_seq"
                ),
                {"i": iid},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO sm_history (instance_id, seq, at, type) VALUES (:i, :s, now(), :t)"
                ),
                {"i": iid, "s": seq, "t": type_},
            )

        slow = repo.engine.connect()
        slow_tx = slow.begin()
        write(slow, a, "test.first")  # numbered first, still uncommitted
        with repo.engine.begin() as fast:
            write(fast, b, "test.second")  # numbered after it, committed
        assert feed.read() == []  # not "second" alone: "first" may still come
        assert feed.read() == []
        slow_tx.commit()
        assert [r.entry.type for r in read_some(feed)] == ["test.first", "test.second"]

        doomed_tx = slow.begin()
        write(slow, a, "test.rolled-back")
        with repo.engine.begin() as fast:
            write(fast, b, "test.third")
        assert feed.read() == []
        doomed_tx.rollback()
        slow.close()
        assert [r.entry.type for r in read_some(feed)] == ["test.third"]  # the gap is final
