"""The HTTP API over a real engine (SQLite and Postgres), through FastAPI's test client."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from starlette.exceptions import StarletteDeprecationWarning

from statemachine import Engine, InputValidationError, StepContext, workflow
from statemachine.server import create_app, stream
from statemachine.testing import ManualClock

with warnings.catch_warnings():
    # starlette would rather have the httpx2 fork; its test client works the same with httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

START = datetime(2030, 1, 1, tzinfo=UTC)
TOKEN = "s3cret-token"
ORDER = {"order_id": "o-1", "amount": 12.5}


class OrderIn(BaseModel):
    order_id: str
    amount: float


class Shop:
    """Handlers; ``charge`` fails while ``broken`` is set, to exercise retry."""

    def __init__(self) -> None:
        self.broken = False

    def validate(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        return {"order_id": ctx.input["order_id"], "valid": True}

    def charge(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("card service down")
        return {"charged": ctx.input["amount"]}


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture
def engine(db_url: str, shop: Shop) -> Iterator[Engine]:
    eng = Engine(db_url, clock=ManualClock(START))
    eng.register(
        [
            workflow("order", input_schema=OrderIn)
            .task("validate", shop.validate)
            .task("charge", shop.charge)
            .build(),
            workflow("approval")
            .pass_("prepare", result={"ready": True})
            .wait("approved", event="approve")
            .pass_("done", transform=lambda ctx: {"approved_by": ctx.prev["by"]})
            .build(),
            workflow("welcome")
            .trigger("Customer.created")
            .pass_("greet", transform=lambda ctx: {"hello": ctx.input["name"]})
            .build(),
            workflow("upgrade")
            .trigger("Customer.upgraded", condition='plan === "enterprise"')
            .pass_("assign", result={"manager": "grace"})
            .build(),
        ]
    )
    yield eng
    eng.close()
    gc.collect()


# the server answers for localhost names only, and takes POSTs as JSON only (even empty ones)
BASE_URL = "http://localhost"
JSON = {"Content-Type": "application/json"}


def _client(engine: Engine, token: str | None = None) -> TestClient:
    return TestClient(create_app(engine, token=token), base_url=BASE_URL, headers=JSON)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with _client(engine) as c:
        yield c


def start(client: TestClient, name: str, input: Any = None, **extra: Any) -> dict[str, Any]:
    res = client.post(f"/api/workflows/{name}/instances", json={"input": input, **extra})
    assert res.status_code == 201, res.text
    body: dict[str, Any] = res.json()
    return body


def error_of(res: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of a response that must have ``status``."""
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# -- open routes ---------------------------------------------------------------------------


def test_health_and_dashboard(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "worker": "none"}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "dashboard/app.js" in page.text and "dashboard/style.css" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = client.get(f"/dashboard/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)


def test_unknown_routes_and_methods_answer_the_error_shape(client: TestClient) -> None:
    assert error_of(client.get("/api/nope"), 404)["code"] == "not_found"
    assert error_of(client.delete("/api/workflows"), 405)["code"] == "method_not_allowed"


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/health", "get"),
        ("/api/workflows", "get"),
        ("/api/schedules", "get"),
        ("/api/workflows/{name}/instances", "post"),
        ("/api/instances", "get"),
        ("/api/instances/{instance_id}", "get"),
        ("/api/instances/{instance_id}/history", "get"),
        ("/api/instances/{instance_id}/cancel", "post"),
        ("/api/instances/{instance_id}/pause", "post"),
        ("/api/instances/{instance_id}/resume", "post"),
        ("/api/instances/{instance_id}/retry", "post"),
        ("/api/instances/{instance_id}/replay", "post"),
        ("/api/instances/{instance_id}/events", "post"),
        ("/api/events", "post"),
        ("/api/stream-ticket", "post"),
        ("/api/instances/{instance_id}/stream", "get"),
        ("/api/stream", "get"),
    ]:
        assert paths[path][method]["summary"], (path, method)
    created = paths["/api/workflows/{name}/instances"]["post"]["responses"]
    assert "201" in created and "404" in created and "422" in created
    assert {"StartRequest", "EventRequest", "WorkflowInstance", "ErrorResponse"} <= set(
        spec["components"]["schemas"]
    )


# -- workflows and starting ----------------------------------------------------------------


def test_workflows_lists_the_registered_definitions(client: TestClient) -> None:
    found = {w["name"]: w for w in client.get("/api/workflows").json()}
    assert set(found) == {"order", "approval", "welcome", "upgrade"}
    order = found["order"]
    assert order["version"] == "1"
    assert order["hash"] == start(client, "order", ORDER)["definition_hash"]
    assert order["steps"] == ["validate", "charge"]
    assert order["mermaid"].startswith("flowchart TD")
    assert [(n["path"], n["layer"]) for n in order["graph"]["steps"]] == [
        ("validate", 0),
        ("charge", 1),
    ]
    assert order["graph"]["edges"] == [
        {"source": "validate", "target": "charge", "label": "", "kind": "next"}
    ]
    assert found["welcome"]["triggers"] == ["Customer.created"]


def test_start_answers_201_with_the_instance(client: TestClient, engine: Engine) -> None:
    inst = start(client, "order", ORDER)
    assert inst["status"] == "pending" and inst["workflow_name"] == "order"
    assert inst["input"] == ORDER and inst["step_results"] == {}
    assert engine.run_due() == 1
    done = client.get(f"/api/instances/{inst['id']}").json()
    assert done["status"] == "completed" and done["output"] == {"charged": 12.5}
    steps = done["step_results"]
    assert steps["validate"]["status"] == "completed" and steps["charge"]["attempts"] == 1
    assert steps["validate"]["output"] == {"order_id": "o-1", "valid": True}


def test_start_with_an_instance_id_is_idempotent(client: TestClient) -> None:
    first = start(client, "order", ORDER, instance_id="order-1")
    again = start(client, "order", ORDER, instance_id="order-1")
    assert first["id"] == again["id"] == "order-1"
    assert [i["id"] for i in client.get("/api/instances").json()] == ["order-1"]
    taken = client.post("/api/workflows/approval/instances", json={"instance_id": "order-1"})
    assert error_of(taken, 409)["code"] == "invalid_transition"


def test_start_without_a_body_starts_with_no_input(client: TestClient) -> None:
    res = client.post("/api/workflows/approval/instances")
    assert res.status_code == 201 and res.json()["input"] is None


def test_start_errors(client: TestClient) -> None:
    unknown = error_of(client.post("/api/workflows/ordr/instances", json={}), 404)
    assert unknown["code"] == "workflow_not_found" and "did you mean 'order'" in unknown["message"]

    bad = error_of(client.post("/api/workflows/order/instances", json={"input": {}}), 422)
    assert bad["code"] == "invalid_input"
    assert {tuple(d["loc"]) for d in bad["details"]} == {("order_id",), ("amount",)}
    assert {(d["msg"], d["type"]) for d in bad["details"]} == {("Field required", "missing")}
    assert client.get("/api/instances").json() == []  # nothing stored

    url = "/api/workflows/order/instances"
    malformed = client.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert error_of(malformed, 400)["code"] == "malformed_json"
    for body in ([1, 2], {"inputs": ORDER}, {"input": ORDER, "instance_id": "x" * 201}):
        assert error_of(client.post(url, json=body), 422)["code"] == "invalid_request"
    assert error_of(client.post(url, json={"instance_id": 7}), 422)["details"][0]["loc"] == [
        "body",
        "instance_id",
    ]


# -- reading -------------------------------------------------------------------------------


def test_list_filters_and_pages_newest_first(
    client: TestClient, engine: Engine, shop: Shop
) -> None:
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    ids = []
    for i in range(5):
        ids.append(start(client, "order", {**ORDER, "order_id": f"o-{i}"})["id"])
        clock.advance("1s")
    waiting = start(client, "approval")["id"]
    engine.run_due()  # orders complete, the approval waits

    def listed(**params: Any) -> list[str]:
        res = client.get("/api/instances", params=params)
        assert res.status_code == 200, res.text
        return [i["id"] for i in res.json()]

    assert listed() == [waiting, *reversed(ids)]
    assert listed(workflow="order") == list(reversed(ids))
    assert listed(status="waiting") == [waiting]
    assert listed(status="completed", workflow="approval") == []
    assert listed(workflow="order", limit=2) == [ids[4], ids[3]]
    assert listed(workflow="order", limit=2, offset=2) == [ids[2], ids[1]]
    assert listed(workflow="order", offset=5) == []
    for params in ({"limit": 0}, {"limit": "many"}, {"offset": -1}, {"status": "done"}):
        err = error_of(client.get("/api/instances", params=params), 422)
        assert err["code"] == "invalid_request"
    engine.update_metadata(ids[1], {"customer": "c-1", "tier": "gold"})
    engine.update_metadata(ids[3], {"customer": "c-1"})
    assert listed(meta="customer:c-1") == [ids[3], ids[1]]
    assert listed(meta=["customer:c-1", "tier:gold"]) == [ids[1]]
    assert listed(meta="customer:c-2") == []
    err = error_of(client.get("/api/instances", params={"meta": "no-colon"}), 422)
    assert err["code"] == "invalid_input" and "key:value" in err["message"]


def test_get_and_history(client: TestClient, engine: Engine) -> None:
    iid = start(client, "order", ORDER)["id"]
    engine.run_due()
    history = client.get(f"/api/instances/{iid}/history").json()
    types = [(h["type"], h["step"]) for h in history]
    assert types[0] == ("workflow.started", None) and types[-1] == ("workflow.completed", None)
    assert types.index(("workflow.step.completed", "validate")) < types.index(
        ("workflow.step.started", "charge")
    )
    assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)
    for path in ("/api/instances/nope", "/api/instances/nope/history"):
        assert error_of(client.get(path), 404)["code"] == "instance_not_found"


def test_an_instance_lists_its_steps_in_the_order_they_started(
    client: TestClient, engine: Engine
) -> None:
    """Under a ManualClock both steps start at one instant: the graph's order, not the names,
    puts ``prepare`` before ``approved`` (the dashboard reads this order)."""
    iid = start(client, "approval")["id"]
    engine.run_due()
    assert list(client.get(f"/api/instances/{iid}").json()["step_results"]) == [
        "prepare",
        "approved",
    ]


# -- control -------------------------------------------------------------------------------


def test_pause_resume_cancel(client: TestClient, engine: Engine) -> None:
    iid = start(client, "approval")["id"]
    engine.run_due()
    base = f"/api/instances/{iid}"
    assert client.get(base).json()["status"] == "waiting"
    paused = client.post(f"{base}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    again = error_of(client.post(f"{base}/pause"), 409)
    assert again["code"] == "invalid_transition" and "paused" in again["message"]
    assert client.post(f"{base}/resume").json()["status"] in ("running", "waiting")
    cancelled = client.post(f"{base}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert error_of(client.post(f"{base}/cancel"), 409)["code"] == "invalid_transition"
    for verb in ("cancel", "pause", "resume", "retry", "replay"):
        res = client.post(f"/api/instances/nope/{verb}")
        assert error_of(res, 404)["code"] == "instance_not_found", verb


def test_resume_of_a_completed_instance_is_409(client: TestClient, engine: Engine) -> None:
    iid = start(client, "order", ORDER)["id"]
    engine.run_due()
    err = error_of(client.post(f"/api/instances/{iid}/resume"), 409)
    assert err["code"] == "invalid_transition" and "completed" in err["message"]


def test_retry_continues_a_failed_instance(client: TestClient, engine: Engine, shop: Shop) -> None:
    shop.broken = True
    iid = start(client, "order", ORDER)["id"]
    engine.run_due()
    failed = client.get(f"/api/instances/{iid}").json()
    assert failed["status"] == "failed"
    assert failed["step_results"]["charge"]["error"]["message"] == "card service down"
    shop.broken = False
    retried = client.post(f"/api/instances/{iid}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "running"
    engine.run_due()
    done = client.get(f"/api/instances/{iid}").json()
    assert done["status"] == "completed" and done["step_results"]["validate"]["attempts"] == 1
    assert error_of(client.post(f"/api/instances/{iid}/retry"), 409)["code"] == (
        "invalid_transition"
    )


def test_compensated_steps_are_shown_as_such_and_retry_books_again(
    client: TestClient, engine: Engine
) -> None:
    booked: list[str] = []
    declined = [True]

    def pay(data: Any) -> str:
        if declined[0]:
            raise RuntimeError("declined")
        return "paid"

    engine.register(
        workflow("saga")
        .task("book", lambda data: booked.append("b") or {"n": len(booked)}, compensate=lambda out: None)
        .task("pay", pay)
        .build()
    )  # fmt: skip
    iid = start(client, "saga", {})["id"]
    engine.run_due()
    failed = client.get(f"/api/instances/{iid}").json()
    assert failed["status"] == "failed"
    assert failed["step_results"]["book"]["status"] == "compensated"
    css = client.get("/dashboard/style.css").text
    assert '.node[data-status="compensated"]' in css  # drawn as undone, not as completed
    declined[0] = False
    assert client.post(f"/api/instances/{iid}/retry").status_code == 200
    engine.run_due()
    done = client.get(f"/api/instances/{iid}").json()
    assert done["status"] == "completed"
    book = done["step_results"]["book"]
    assert (book["status"], book["output"]) == ("completed", {"n": 2})
    assert booked == ["b", "b"]


def test_replay_answers_201_with_the_new_instance(client: TestClient, engine: Engine) -> None:
    iid = start(client, "order", ORDER)["id"]
    engine.run_due()
    res = client.post(f"/api/instances/{iid}/replay")
    assert res.status_code == 201
    copy = res.json()
    assert copy["id"] != iid and copy["status"] == "pending"
    assert copy["input"] == ORDER and copy["definition_hash"] == engine.get(iid).definition_hash


# -- events --------------------------------------------------------------------------------


def test_send_event_to_a_waiting_instance(client: TestClient, engine: Engine) -> None:
    iid = start(client, "approval")["id"]
    engine.run_due()
    url = f"/api/instances/{iid}/events"
    res = client.post(url, json={"name": "approve", "data": {"by": "ada"}})
    assert res.status_code == 202 and res.json() == {"instance_id": iid, "name": "approve"}
    engine.run_due()
    done = client.get(f"/api/instances/{iid}").json()
    assert done["status"] == "completed" and done["output"] == {"approved_by": "ada"}

    closed = error_of(client.post(url, json={"name": "approve"}), 409)
    assert closed["code"] == "invalid_transition"
    missing = client.post("/api/instances/nope/events", json={"name": "approve"})
    assert error_of(missing, 404)["code"] == "instance_not_found"


@pytest.mark.parametrize(
    "body", [{"name": 5}, {"name": ""}, {"data": 1}, {"name": ["a"]}, {"name": "a", "x": 1}]
)
def test_bad_event_bodies_are_422(client: TestClient, body: dict[str, Any]) -> None:
    iid = start(client, "approval")["id"]
    for url in (f"/api/instances/{iid}/events", "/api/events"):
        assert error_of(client.post(url, json=body), 422)["code"] == "invalid_request"


def test_emit_starts_the_triggered_workflows(client: TestClient, engine: Engine) -> None:
    res = client.post("/api/events", json={"name": "Customer.created", "data": {"name": "Ada"}})
    assert res.status_code == 200
    (iid,) = res.json()["started"]
    assert engine.get(iid).workflow_name == "welcome"
    engine.run_due()
    assert client.get(f"/api/instances/{iid}").json()["output"] == {"hello": "Ada"}

    basic = client.post(
        "/api/events", json={"name": "Customer.upgraded", "data": {"plan": "basic"}}
    )
    assert basic.json() == {"started": []}
    big = {"name": "Customer.upgraded", "data": {"plan": "enterprise"}}
    (up,) = client.post("/api/events", json=big).json()["started"]
    assert engine.get(up).workflow_name == "upgrade"
    assert client.post("/api/events", json={"name": "Nobody.listens"}).json() == {"started": []}


# -- token ---------------------------------------------------------------------------------


def test_a_token_guards_every_route_but_the_dashboard_and_health(engine: Engine) -> None:
    iid = engine.start("approval")
    with _client(engine, TOKEN) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/dashboard/app.js").status_code == 200
        guarded = [
            ("GET", "/api/workflows"),
            ("GET", "/api/instances"),
            ("GET", f"/api/instances/{iid}"),
            ("GET", f"/api/instances/{iid}/history"),
            ("POST", "/api/workflows/approval/instances"),
            ("POST", f"/api/instances/{iid}/pause"),
            ("POST", f"/api/instances/{iid}/replay"),
            ("POST", "/api/events"),
            ("GET", f"/api/instances/{iid}/stream"),
            ("GET", "/api/stream"),
        ]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            for method, path in guarded:
                res = client.request(method, path, headers=headers)
                assert error_of(res, 401)["code"] == "unauthorized", (method, path, headers)
                assert res.headers["www-authenticate"] == "Bearer"
        # the token never goes in a URL (access logs keep URLs): not even on the streams
        for path in ("/api/instances", "/api/stream", f"/api/instances/{iid}/stream"):
            res = client.get(path, params={"token": TOKEN})
            assert error_of(res, 401)["code"] == "unauthorized", path

        client.headers["Authorization"] = f"Bearer {TOKEN}"
        assert client.get("/api/workflows").status_code == 200
        assert client.post(f"/api/instances/{iid}/pause").json()["status"] == "paused"
        assert error_of(client.get("/api/instances/nope"), 404)["code"] == "instance_not_found"
        with client.stream("GET", f"/api/instances/{iid}/stream") as res:
            assert res.status_code == 200
            assert res.headers["content-type"].startswith("text/event-stream")


def test_an_empty_token_is_refused(engine: Engine) -> None:
    with pytest.raises(InputValidationError):
        create_app(engine, token="")


# -- server-sent events --------------------------------------------------------------------


def read_events(
    res: httpx.Response, until: Callable[[str, dict[str, Any]], bool], timeout: float = 20
) -> list[tuple[str, dict[str, Any]]]:
    """SSE messages as (event, data) until ``until`` says stop; pings bound each wait."""
    import json

    deadline = time.monotonic() + timeout
    found: list[tuple[str, dict[str, Any]]] = []
    kind, data = "message", ""
    for line in res.iter_lines():
        assert time.monotonic() < deadline, f"no end of stream after {timeout}s: {found}"
        if line.startswith("event:"):
            kind = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data += line.partition(":")[2].strip()
        elif not line and data:
            found.append((kind, json.loads(data)))
            if until(*found[-1]):
                return found
            kind, data = "message", ""
    raise AssertionError(f"the stream ended early: {found}")


def in_background(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        time.sleep(0.05)  # let the reader start reading
        try:
            fn()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


@pytest.fixture
def fast_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings every 0.2s wake the reader, so a missing event fails on time instead of hanging."""
    monkeypatch.setattr(stream, "PING_SECONDS", 0.2)


class Subscriptions:
    """Counts live ``engine.on`` subscriptions, to see that a closed stream unsubscribes."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.live = 0
        subscribe = engine.on

        def on(pattern: str, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
            off = subscribe(pattern, callback)
            self.live += 1

            def unsubscribe() -> None:
                self.live -= 1
                off()

            return unsubscribe

        monkeypatch.setattr(engine, "on", on)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("fast_pings")
def test_instance_stream_delivers_step_events_in_order(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = start(client, "order", ORDER)["id"]
    other = start(client, "order", {**ORDER, "order_id": "o-2"})["id"]
    subscriptions = Subscriptions(engine, monkeypatch)
    with client.stream("GET", f"/api/instances/{iid}/stream") as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        assert subscriptions.live == 1
        thread, failures = in_background(engine.run_due)
        events = read_events(res, lambda kind, _: kind == "workflow.completed")
    thread.join(30)
    assert not failures and not thread.is_alive()
    assert subscriptions.live == 0  # the closed stream unsubscribed
    assert all(kind == data["type"] and data["instance_id"] == iid for kind, data in events)
    assert other not in {data["instance_id"] for _, data in events}
    steps = [
        (kind, data.get("step"))
        for kind, data in events
        if kind.startswith("workflow.step.") or kind == "workflow.completed"
    ]
    assert steps == [
        ("workflow.step.started", "validate"),
        ("workflow.step.completed", "validate"),
        ("workflow.step.started", "charge"),
        ("workflow.step.completed", "charge"),
        ("workflow.completed", None),
    ]
    assert events[-1][1]["output"] == {"charged": 12.5}


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("fast_pings")
def test_global_stream_filters_by_workflow(client: TestClient, engine: Engine) -> None:
    def run() -> None:
        engine.execute("order", ORDER)
        engine.execute("welcome", {"name": "Ada"})

    with client.stream("GET", "/api/stream", params={"workflow": "welcome"}) as res:
        thread, failures = in_background(run)
        events = read_events(res, lambda kind, _: kind == "workflow.completed")
    thread.join(30)
    assert not failures
    assert {data["workflow_name"] for _, data in events} == {"welcome"}
    assert events[0][0] == "workflow.started"

    with client.stream("GET", "/api/stream") as res:
        thread, failures = in_background(lambda: engine.execute("order", ORDER))
        events = read_events(res, lambda kind, _: kind == "workflow.completed")
    thread.join(30)
    assert not failures and {data["workflow_name"] for _, data in events} == {"order"}


def test_stream_of_an_unknown_instance_is_404(client: TestClient) -> None:
    assert error_of(client.get("/api/instances/nope/stream"), 404)["code"] == "instance_not_found"


def test_a_real_bug_is_a_500_internal_without_details(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(engine, "list", broken)
    app = create_app(engine)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        err = error_of(client.get("/api/instances"), 500)
    assert err == {"code": "internal", "message": "internal server error"}


def test_instances_filter_by_parent(client: TestClient, engine: Engine) -> None:
    """``?parent=`` lists an instance's children: the dashboard links a parent to them."""
    engine.register(
        [
            workflow("kid").pass_("play", result={"ok": True}).build(),
            workflow("mom").subworkflow("raise", workflow="kid").build(),
        ]
    )
    mom = start(client, "mom")["id"]
    other = start(client, "mom")["id"]
    engine.run_due()
    kids = client.get("/api/instances", params={"parent": mom}).json()
    assert [k["workflow_name"] for k in kids] == ["kid"]
    assert kids[0]["parent_id"] == mom and kids[0]["status"] == "completed"
    assert client.get("/api/instances", params={"parent": other}).json()[0]["parent_id"] == other
    assert client.get("/api/instances", params={"parent": "nobody"}).json() == []


def test_schedules_are_listed_with_their_next_fire_time(engine: Engine) -> None:
    engine.register(
        workflow("nightly").schedule("0 2 * * *", timezone="Europe/Paris").pass_("a").build()
    )
    with _client(engine) as client:
        (found,) = client.get("/api/schedules").json()
    expected = engine.schedules()[0].next_at
    assert expected is not None
    assert found["workflow"] == "nightly" and found["spec"] == "0 2 * * *"
    assert found["timezone"] == "Europe/Paris" and found["paused"] is False
    assert datetime.fromisoformat(found["next_at"]) == expected
    with _client(engine) as client:
        infos = client.get("/api/workflows").json()
    (info,) = [i for i in infos if i["name"] == "nightly"]
    assert info["schedules"] == ["0 2 * * * (Europe/Paris)"]
