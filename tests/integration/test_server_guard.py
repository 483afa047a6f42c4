"""The request guard, in process: Host allow-list, Origin and content type of state-changing
calls, authentication before the body is read, the body cap, stream tickets, and /health
reporting the worker beside the app. (The same over a real socket: test_server_serve.py.)"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from statemachine import Engine, InputValidationError, workflow
from statemachine.server import auth, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "guard-test-token"
JSON = {"Content-Type": "application/json"}
LOCAL = "http://localhost"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = Engine(db_url)
    eng.register(
        [
            workflow("approval")
            .pass_("prepare", result={"ready": True})
            .wait("approved", event="approve")
            .build()
        ]
    )
    yield eng
    eng.close()
    gc.collect()


def client(engine: Engine, token: str | None = None, **options: Any) -> TestClient:
    return TestClient(create_app(engine, token, **options), base_url=LOCAL)


def error_code(res: Any, status: int) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    code: str = body["error"]["code"]
    return code


# -- cross-site requests (no token) ----------------------------------------------------------


def test_a_cross_site_form_post_starts_nothing(engine: Engine) -> None:
    url = "/api/workflows/approval/instances"
    with client(engine) as c:
        # what a foreign page's <form enctype="text/plain"> sends: no CORS preflight
        res = c.post(
            url,
            content=b'{"input": null, "x": "=1"}',
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        )
        assert error_code(res, 403) == "forbidden_origin"
        # the same without an Origin (an old browser, a privacy setting): still not JSON
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            res = c.post(url, content=b"input=1", headers={"Content-Type": kind})
            assert error_code(res, 415) == "unsupported_media_type", kind
        assert error_code(c.post(url), 415) == "unsupported_media_type"  # no type at all
        # JSON from a foreign page (it would need a preflight, which gets no CORS answer)
        res = c.post(url, json={}, headers={"Origin": "https://evil.example"})
        assert error_code(res, 403) == "forbidden_origin"
        res = c.post(url, json={}, headers={"Origin": "null"})  # a sandboxed frame
        assert error_code(res, 403) == "forbidden_origin"
        assert engine.list() == []

        # the dashboard's own page, and clients that send no Origin, are served
        assert c.post(url, json={}, headers={"Origin": LOCAL}).status_code == 201
        assert c.post(url, headers=JSON).status_code == 201  # empty body, JSON type
        res = c.post(url, json={}, headers={"Content-Type": "application/json; charset=utf-8"})
        assert res.status_code == 201
        assert len(engine.list()) == 3


def test_control_calls_need_json_and_the_same_origin(engine: Engine) -> None:
    iid = engine.start("approval")
    cancel = f"/api/instances/{iid}/cancel"
    with client(engine) as c:
        assert error_code(c.post(cancel), 415) == "unsupported_media_type"
        foreign = {**JSON, "Origin": "http://evil.example"}
        assert error_code(c.post(cancel, headers=foreign), 403) == "forbidden_origin"
        # another port of the same name is another origin (another local app)
        other_port = {**JSON, "Origin": "http://localhost:3000"}
        assert error_code(c.post(cancel, headers=other_port), 403) == "forbidden_origin"
        assert engine.get(iid).status == "pending"
        # GETs are not state-changing: a foreign Origin cannot read them anyway (no CORS)
        assert c.get(f"/api/instances/{iid}", headers={"Origin": "http://evil.example"}).is_success

        res = c.post(cancel, headers={**JSON, "Origin": LOCAL})
        assert res.status_code == 200 and res.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://localhost:8000", "localhost:8000", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("https://localhost", "localhost", True),  # default port on both sides
        ("http://localhost:80", "localhost", True),
        ("http://127.0.0.1:8000", "localhost:8000", False),  # another name: another origin
        ("http://localhost:8001", "localhost:8000", False),
        ("ftp://localhost:8000", "localhost:8000", False),
        ("http://localhost.evil.example:8000", "localhost:8000", False),
    ],
)
def test_same_origin_means_same_name_and_port(
    engine: Engine, origin: str, host: str, allowed: bool
) -> None:
    with client(engine) as c:
        res = c.post("/api/events", json={"name": "x"}, headers={"Origin": origin, "Host": host})
        assert res.status_code == (200 if allowed else 403), res.text


# -- Host allow-list (DNS rebinding) -----------------------------------------------------------


def test_a_foreign_host_is_refused_but_health_answers(engine: Engine) -> None:
    iid = engine.start("approval")
    with client(engine) as c:
        evil = {"Host": "evil.example:8000"}
        for method, path in [
            ("GET", "/"),
            ("GET", "/api/instances"),
            ("GET", "/api/stream"),
            ("POST", f"/api/instances/{iid}/cancel"),
        ]:
            res = c.request(method, path, headers={**JSON, **evil})
            assert error_code(res, 400) == "host_not_allowed", path
            assert "--allowed-host evil.example" in res.json()["error"]["message"]
        assert engine.get(iid).status == "pending"
        assert c.get("/health", headers=evil).status_code == 200  # probes use addresses
        for host in ("localhost", "LOCALHOST:8000", "127.0.0.1:1234", "[::1]:8000", "localhost."):
            assert c.get("/api/instances", headers={"Host": host}).status_code == 200, host
        for host in ("", "localhost:x", "[::1", "127.0.0.2"):
            res = c.get("/api/instances", headers={"Host": host})
            assert error_code(res, 400) == "host_not_allowed", host


def test_allowed_hosts_are_configurable(engine: Engine) -> None:
    with client(engine, allowed_hosts=["App.Example"]) as c:
        assert c.get("/api/instances", headers={"Host": "app.example:443"}).status_code == 200
        assert c.get("/api/instances").status_code == 400  # the list replaces the default
    with client(engine, allowed_hosts=["*"]) as c:
        assert c.get("/api/instances", headers={"Host": "anything.example"}).status_code == 200
    for bad in ("localhost", [""], [None]):
        with pytest.raises(InputValidationError):
            create_app(engine, allowed_hosts=bad)  # type: ignore[arg-type]


# -- authentication before the body, and the cap ---------------------------------------------


def asgi_call(app: Any, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """One POST straight through ASGI: (status, bytes of the body the app pulled)."""
    pulled = 0
    pending = list(chunks)
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if not pending:
            await asyncio.sleep(3600)  # a client that never finishes its body
        chunk = pending.pop(0)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return status, pulled


def test_an_unauthenticated_body_is_never_read(engine: Engine) -> None:
    app = create_app(engine, TOKEN)
    chunks = [b"x" * 65536] * 64  # 4 MiB, sent chunked: no Content-Length
    headers = {"Host": "localhost", **JSON}
    status, pulled = asgi_call(app, "/api/workflows/approval/instances", headers, chunks)
    assert (status, pulled) == (401, 0)
    wrong = {**headers, "Authorization": "Bearer nope"}
    assert asgi_call(app, "/api/events", wrong, chunks) == (401, 0)
    assert engine.list() == []


def test_a_body_over_the_cap_is_413_without_reading_the_rest(engine: Engine) -> None:
    app = create_app(engine, TOKEN, max_body=100_000)
    headers = {"Host": "localhost", "Authorization": f"Bearer {TOKEN}", **JSON}
    # chunked: refused as soon as the chunks pass the cap; the rest is never pulled
    chunks = [b" " * 50_000] * 100
    status, pulled = asgi_call(app, "/api/workflows/approval/instances", headers, chunks)
    assert status == 413 and pulled <= 150_000
    # a Content-Length over the cap: refused before reading anything
    declared = {**headers, "Content-Length": "5000000"}
    assert asgi_call(app, "/api/events", declared, chunks) == (413, 0)
    # under the cap, in several chunks: served
    body = b'{"input": {"pad": "' + b"p" * 90_000 + b'"}}'
    parts = [body[i : i + 10_000] for i in range(0, len(body), 10_000)]
    assert asgi_call(app, "/api/workflows/approval/instances", headers, parts)[0] == 201
    assert len(engine.list()) == 1

    with TestClient(app, base_url=LOCAL, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        res = c.post("/api/events", content=b"[" + b"1," * 60_000 + b"1]", headers=JSON)
        assert error_code(res, 413) == "payload_too_large"
        res = c.post("/api/events", content=iter([b"{", b" " * 200_000, b"}"]), headers=JSON)
        assert error_code(res, 413) == "payload_too_large"
    with pytest.raises(InputValidationError):
        create_app(engine, max_body=0)


# -- stream tickets ----------------------------------------------------------------------------


def test_streams_open_with_a_single_use_ticket(engine: Engine) -> None:
    iid = engine.start("approval")
    with client(engine, TOKEN) as c:
        assert error_code(c.post("/api/stream-ticket", headers=JSON), 401) == "unauthorized"
        auth_json = {**JSON, "Authorization": f"Bearer {TOKEN}"}
        for path in ("/api/stream", f"/api/instances/{iid}/stream"):
            res = c.post("/api/stream-ticket", headers=auth_json)
            assert res.status_code == 200 and res.json()["expires_in"] == 60
            ticket = res.json()["ticket"]
            assert len(ticket) >= 40 and TOKEN not in ticket
            with c.stream("GET", path, params={"ticket": ticket}) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
            again = c.get(path, params={"ticket": ticket})  # used up
            assert error_code(again, 401) == "unauthorized"
            assert "POST /api/stream-ticket" in again.json()["error"]["message"]
        # a ticket opens streams only
        ticket = c.post("/api/stream-ticket", headers=auth_json).json()["ticket"]
        res = c.get("/api/instances", params={"ticket": ticket})
        assert error_code(res, 401) == "unauthorized"
        assert error_code(c.get("/api/stream", params={"ticket": "made-up"}), 401)


def test_tickets_expire() -> None:
    tickets = auth.Tickets(lifetime=0.2)
    kept, late = tickets.issue(), tickets.issue()
    assert kept != late
    assert tickets.redeem(kept) and not tickets.redeem(kept)
    time.sleep(0.4)
    assert not tickets.redeem(late)


def test_the_access_log_filter_redacts_tokens_and_tickets() -> None:
    line = '127.0.0.1:5 - "GET /api/stream?workflow=a&ticket=abc123&TOKEN=s3cret HTTP/1.1" 200'
    assert auth.redact(line) == (
        '127.0.0.1:5 - "GET /api/stream?workflow=a&ticket=[redacted]&TOKEN=[redacted] HTTP/1.1" 200'
    )
    assert auth.redact("/?token=s3cret") == "/?token=[redacted]"
    assert auth.redact("/api/instances?tokens=1") == "/api/instances?tokens=1"


# -- /health and the worker --------------------------------------------------------------------


def test_health_reports_the_worker_beside_the_app(engine: Engine) -> None:
    with engine.worker(poll_interval="20ms") as worker, client(engine, TOKEN, worker=worker) as c:
        assert c.get("/health").json() == {"status": "ok", "worker": "running"}
    assert worker.done()
    with client(engine, TOKEN, worker=worker) as c:
        res = c.get("/health")
        assert res.status_code == 503
        assert res.json() == {"status": "unavailable", "worker": "stopped"}
    with client(engine) as c:
        assert c.get("/health").json() == {"status": "ok", "worker": "none"}


@pytest.mark.timeout(60)
def test_health_is_503_once_the_worker_crashed(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    with (
        Engine(f"sqlite:///{path}") as eng,
        pytest.raises(Exception, match="sm_instance"),  # re-raised as the worker is joined
        eng.worker(poll_interval="20ms") as worker,
        client(eng, worker=worker) as c,
    ):
        assert c.get("/health").json()["worker"] == "running"
        with sqlite3.connect(path) as db:  # the store breaks under the worker
            db.execute("DROP TABLE sm_instance")
        deadline = time.monotonic() + 20
        while not worker.done():
            assert time.monotonic() < deadline, "the worker did not notice"
            time.sleep(0.05)
        res = c.get("/health")
        assert res.status_code == 503
        assert res.json() == {"status": "unavailable", "worker": "failed"}


def test_a_mounted_app_is_guarded_the_same(engine: Engine) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/sm", app=create_app(engine, TOKEN))])
    with TestClient(outer, base_url=LOCAL) as c:
        assert c.get("/sm/health").status_code == 200
        assert c.get("/sm/").status_code == 200
        for path in ("/sm/api/instances", "/sm/api/stream", "/sm/api/nope", "/sm/elsewhere"):
            assert error_code(c.get(path), 401) == "unauthorized", path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/sm/api/instances", headers=bearer).json() == []
        assert error_code(c.get("/sm/api/instances", headers={"Host": "evil.example"}), 400)
