"""A workflow's flow control (concurrency limit and key, priority, schedules with their next
fire times) is shown where an instance is looked at: ``statemachine status`` (text and
``--json``) and ``/api/workflows``, which the dashboard's header draws (issue 22, item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from starlette.exceptions import StarletteDeprecationWarning

from statemachine import Engine, workflow
from statemachine.definition import models
from statemachine.server import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


def limited() -> models.WorkflowDefinition:
    return (
        workflow("reports")
        .concurrency(2, key="${{ input.customer }}")
        .priority(5)
        .schedule("0 2 * * *", timezone="Europe/Paris")
        .pass_("a", end=True)
        .build()
    )


def status(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEMACHINE_DB": db}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "status", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_status_shows_the_workflows_flow_control(db_url: str) -> None:
    with Engine(db_url) as engine:
        engine.register(limited())
        iid = engine.start("reports", {"customer": "c-1"}, instance_id="r-1")
        next_at = engine.schedules("reports")[0].next_at
    assert next_at is not None
    text = status(iid, db=db_url).stdout
    assert "flow control: at most 2 running per ${{ input.customer }}; priority 5" in text, text
    when = next_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"schedule: 0 2 * * * (Europe/Paris), next {when} UTC, active" in text, text
    shown = json.loads(status(iid, "--json", db=db_url).stdout)
    assert shown["id"] == "r-1" and shown["concurrency_key"] == "c-1"  # the instance, as before
    flow = shown["flow_control"]
    assert flow["concurrency"] == {"limit": 2, "key": "${{ input.customer }}"}
    assert flow["priority"] == 5
    (sched,) = flow["schedules"]
    assert sched["spec"] == "0 2 * * *" and sched["timezone"] == "Europe/Paris"
    assert sched["next_at"].startswith(next_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_status_of_a_workflow_without_flow_control_adds_nothing(sqlite_url: str) -> None:
    with Engine(sqlite_url) as engine:
        engine.register(workflow("plain").pass_("a", end=True).build())
        iid = engine.start("plain", {})
    text = status(iid, db=sqlite_url).stdout
    assert "flow control" not in text and "schedule" not in text, text
    flow = json.loads(status(iid, "--json", db=sqlite_url).stdout)["flow_control"]
    assert flow == {"concurrency": None, "priority": 0, "schedules": []}


def test_api_workflows_carries_concurrency_and_priority(sqlite_url: str) -> None:
    with Engine(sqlite_url) as engine:
        engine.register([limited(), workflow("plain").pass_("a", end=True).build()])
        client = TestClient(create_app(engine), base_url="http://localhost")
        with client:
            infos = {i["name"]: i for i in client.get("/api/workflows").json()}
    assert infos["reports"]["concurrency"] == {"limit": 2, "key": "${{ input.customer }}"}
    assert infos["reports"]["priority"] == 5
    assert infos["reports"]["schedules"] == ["0 2 * * * (Europe/Paris)"]
    assert infos["plain"]["concurrency"] is None and infos["plain"]["priority"] == 0
