"""``statemachine serve`` as a user runs it: a real process, a real port, a real SQLite file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-7", "items": ["a"], "amount": 10, "email": "ada@example.com"}
TOKEN = "serve-test-token"


Server = tuple[subprocess.Popen[bytes], str, Path]


@contextlib.contextmanager
def serving(tmp_path: Path, *options: str, token: str | None = TOKEN) -> Iterator[Server]:
    """A running ``serve`` (token from the environment); killed if a test leaves it running."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ}
    env.pop("STATEMACHINE_TOKEN", None)
    env.pop("STATEMACHINE_DB", None)
    if token:
        env["STATEMACHINE_TOKEN"] = token
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", "serve",
             "--db", f"sqlite:///{tmp_path}/serve.db", "--create",
             "--definitions", "definitions", "--actions", "examples.actions:ShopActions",
             "--host", "127.0.0.1", "--port", str(port), *options],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url, log)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path) as running:
        yield running


@pytest.mark.timeout(120)
def test_serve_runs_workflows_and_stops_cleanly_on_sigterm(server: Server) -> None:
    proc, url, log = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/").status_code == 200
        assert client.get("/api/workflows").status_code == 401
        names = {w["name"] for w in client.get("/api/workflows", headers=auth).json()}
        assert "order-processing" in names

        res = client.post(
            "/api/workflows/order-processing/instances", json={"input": ORDER}, headers=auth
        )
        assert res.status_code == 201, res.text
        iid = res.json()["id"]
        deadline = time.monotonic() + 30
        inst = res.json()
        while inst["status"] != "completed":  # the worker in the server process runs it
            assert inst["status"] in ("pending", "running"), inst
            assert time.monotonic() < deadline, f"still {inst['status']}:\n{log.read_text()}"
            time.sleep(0.1)
            inst = client.get(f"/api/instances/{iid}", headers=auth).json()
        assert inst["output"] == {"sent_to": "ada@example.com"}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "serving" in text and "Finished server process" in text


def test_serve_without_the_server_extra_names_the_install(tmp_path: Path) -> None:
    # fastapi made unimportable: the CLI still loads, and serve says what to install
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from statemachine import cli; cli.main(sys.argv[1:])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--db", f"sqlite:///{tmp_path}/x.db"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'durable-statemachine[server]'" in proc.stderr
    assert "Traceback" not in proc.stderr

    direct = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['fastapi'] = None; import statemachine.server"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert direct.returncode == 1
    assert "ImportError" in direct.stderr
    assert "pip install 'durable-statemachine[server]'" in direct.stderr


# -- reliability and security over a real socket ---------------------------------------------


def read_sse_open(client: httpx.Client, path: str, **params: str) -> int:
    """Open a stream, see its headers, close it (as a browser leaving the page)."""
    with client.stream("GET", path, params=params) as res:
        return res.status_code


@pytest.mark.timeout(120)
def test_serve_keeps_the_token_out_of_its_log(tmp_path: Path) -> None:
    secret = "tok-" + "9f3b7c1e5a" * 3
    with serving(tmp_path, token=secret) as (proc, url, log):
        bearer = {"Authorization": f"Bearer {secret}"}
        tickets = []
        with httpx.Client(base_url=url, timeout=10) as client:
            # what the dashboard does: a link with the token, its assets, API calls, streams
            assert client.get("/", params={"token": secret}).status_code == 200
            assert client.get("/dashboard/app.js").status_code == 200
            assert client.get("/api/workflows", headers=bearer).status_code == 200
            res = client.post(
                "/api/workflows/expense-approval/instances",
                json={"input": {"amount": 50, "employee": "ada"}},
                headers=bearer,
            )
            assert res.status_code == 201, res.text
            iid = res.json()["id"]
            for path in ("/api/stream", f"/api/instances/{iid}/stream", "/api/stream"):
                res = client.post("/api/stream-ticket", headers={**bearer, **JSON})
                assert res.status_code == 200, res.text
                tickets.append(res.json()["ticket"])
                assert read_sse_open(client, path, ticket=tickets[-1]) == 200
            # an old client that still puts the token in the URL is refused, and not logged
            assert read_sse_open(client, "/api/stream", token=secret) == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    text = log.read_text()
    assert "GET /api/stream?ticket=[redacted]" in text, text  # the access log is on
    assert "GET /?token=[redacted]" in text, text
    assert secret not in text, text
    for ticket in tickets:
        assert ticket not in text, text


JSON = {"Content-Type": "application/json"}


@pytest.mark.timeout(120)
def test_serve_refuses_cross_site_calls_and_foreign_hosts(tmp_path: Path) -> None:
    with serving(tmp_path, "--allowed-host", "statemachine.internal", token=None) as running:
        url = running[1]
        start = "/api/workflows/expense-approval/instances"
        evil = "http://evil.example"
        with httpx.Client(base_url=url, timeout=10) as client:
            res = client.post(
                start,
                content=b'{"input": null}',
                headers={"Content-Type": "text/plain", "Origin": evil},
            )
            assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden_origin"
            res = client.post(
                start, content=b'{"input": null}', headers={"Content-Type": "text/plain"}
            )
            assert res.status_code == 415, res.text
            assert client.get("/api/instances").json() == []

            res = client.post(start, json={"input": {"amount": 5, "employee": "ada"}})
            assert res.status_code == 201, res.text
            cancel = f"/api/instances/{res.json()['id']}/cancel"
            assert client.post(cancel, headers={**JSON, "Origin": evil}).status_code == 403
            assert client.post(cancel).status_code == 415  # a form could send this one
            # DNS rebinding: the browser sends the attacker's name as Host
            rebound = {"Host": f"evil.example:{url.rsplit(':', 1)[1]}"}
            assert client.get("/api/instances", headers=rebound).status_code == 400
            assert client.post(cancel, headers={**JSON, **rebound}).status_code == 400
            assert client.get("/health", headers=rebound).status_code == 200
            named = {"Host": "statemachine.internal"}
            assert client.get("/api/instances", headers=named).status_code == 200
            assert client.get("/api/instances", headers={"Host": "localhost"}).status_code == 200
            # curl -X POST -H 'Content-Type: application/json' .../cancel
            res = client.post(cancel, headers=JSON)
            assert res.status_code == 200 and res.json()["status"] == "cancelled"


def vm_kib(pid: int, field: str) -> int:
    """VmRSS or VmHWM (the peak) of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def raw_post(url: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> int:
    """A POST over a plain socket (all of the body sent, whatever the server does); its status."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())
        chunked = headers.get("Transfer-Encoding") == "chunked"
        try:
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close once it has answered; the answer is still readable
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            assert data, "no answer"
            answer += data
    return int(answer.split(b" ", 2)[1])


@pytest.mark.timeout(180)
def test_serve_refuses_big_bodies_without_holding_them(tmp_path: Path) -> None:
    mib = b"\0" * (1 << 20)
    with serving(tmp_path, "--max-body", "1000000") as (proc, url, log):
        base = vm_kib(proc.pid, "VmRSS")
        start = "/api/workflows/expense-approval/instances"
        # unauthenticated: 401 from the headers, the 100 MB body never held
        big = {**JSON, "Content-Length": str(100 << 20)}
        assert raw_post(url, start, big, iter([mib] * 100)) == 401
        chunked = {**JSON, "Transfer-Encoding": "chunked"}
        assert raw_post(url, start, chunked, iter([mib] * 100)) == 401
        # authenticated but over the cap: 413, declared or chunked
        auth = {**JSON, "Authorization": f"Bearer {TOKEN}"}
        assert (
            raw_post(url, start, {**auth, "Content-Length": str(100 << 20)}, iter([mib] * 100))
            == 413
        )
        assert (
            raw_post(url, start, {**auth, "Transfer-Encoding": "chunked"}, iter([mib] * 100)) == 413
        )
        grown = vm_kib(proc.pid, "VmHWM") - base
        assert grown < 40 * 1024, f"the server grew by {grown} KiB:\n{log.read_text()}"
        # under the cap, chunked: served
        body = b'{"input": {"amount": 5, "employee": "ada"}}'
        ok = {**auth, "Transfer-Encoding": "chunked"}
        assert raw_post(url, start, ok, iter([body[:10], body[10:]])) == 201


@pytest.mark.timeout(120)
def test_serve_health_reports_a_dead_worker(tmp_path: Path) -> None:
    with serving(tmp_path) as (proc, url, log):
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "worker": "running"}
        with sqlite3.connect(tmp_path / "serve.db") as db:  # the store breaks under the worker
            db.execute("DROP TABLE sm_instance")
        deadline = time.monotonic() + 30
        while (res := httpx.get(f"{url}/health", timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, f"still healthy:\n{log.read_text()}"
            time.sleep(0.1)
        assert res.status_code == 503
        assert res.json() == {"status": "unavailable", "worker": "failed"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 1, log.read_text()
    text = log.read_text()
    assert "the embedded worker crashed" in text and "no such table" in text, text
    assert "Traceback" not in text and "[red]" not in text, text  # styled, not markup as text


@pytest.mark.timeout(120)
def test_serve_without_a_worker_is_healthy(tmp_path: Path) -> None:
    with serving(tmp_path, "--no-worker") as (_, url, _):
        res = httpx.get(f"{url}/health")
        assert res.status_code == 200 and res.json() == {"status": "ok", "worker": "none"}


def test_serve_answers_for_localhost_its_host_and_the_allowed_ones() -> None:
    from statemachine.cli import serve

    local = ["localhost", "127.0.0.1", "::1"]
    assert serve.allowed_hosts("127.0.0.1", []) == [*local, "127.0.0.1"]
    assert serve.allowed_hosts("10.0.0.5", ["app.example"]) == [
        *local,
        "10.0.0.5",
        "app.example",
    ]
    # bound to every interface: no name is implied, so only localhost until told
    assert serve.allowed_hosts("0.0.0.0", []) == local
    assert serve.allowed_hosts("::", ["*"]) == [*local, "*"]
