"""``statemachine serve`` as a user runs it: a real process, a real port, a real SQLite file."""

from __future__ import annotations

import os
import signal
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A running ``serve`` (token from the environment); killed if a test leaves it running."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "STATEMACHINE_TOKEN": TOKEN}
    env.pop("STATEMACHINE_DB", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", "serve",
             "--db", f"sqlite:///{tmp_path}/serve.db",
             "--definitions", "definitions", "--actions", "examples.actions:ShopActions",
             "--host", "127.0.0.1", "--port", str(port)],
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


@pytest.mark.timeout(120)
def test_serve_runs_workflows_and_stops_cleanly_on_sigterm(
    server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
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
