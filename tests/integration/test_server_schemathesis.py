"""Schemathesis against the OpenAPI schema: no generated request, valid or not, gets a 500.

Each operation is tested against a fresh app over a real engine: a SQLite file (and a Postgres
database when STATEMACHINE_TEST_PG is set), a manual clock, the YAML definitions of
``definitions/`` and the example actions, with instances in several statuses. The two SSE
routes are left out: they never end. Every error answer must also have the documented
``{"error": {"code", "message"}}`` shape.

The schema is read once, at import, from an app over a throwaway engine (the schema does not
depend on the engine's state). Schemathesis's lazy ``from_fixture`` loader would avoid that,
but it relies on a pytest internal (``Node._nodeid``) that pytest 9 no longer has.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from examples.actions import ShopActions
from statemachine import Engine
from statemachine.definition import loader
from statemachine.server import create_app
from statemachine.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]
STREAMS = r"/stream$"  # server-sent events: the response never ends
ORDER = {"order_id": "o-1", "items": ["a"], "amount": 5, "email": "ada@example.com"}
# instances in several statuses (made by the client fixture), so that control calls get past
# the 404 of a random id; likewise real workflow and event names
INSTANCES = ["done-1", "failed-1", "waiting-1", "paused-1", "cancelled-1", "pending-1"]
WORKFLOWS = ["order-processing", "expense-approval", "onboarding", "customer-lifecycle"]
EVENTS = ["managerDecision", "Customer.created", "Customer.upgraded"]
JSON = {"Content-Type": "application/json"}
GUARD_CODES = {"host_not_allowed", "forbidden_origin", "unsupported_media_type"}


def _engine(url: str) -> Engine:
    engine = Engine(url, clock=ManualClock())
    try:
        engine.register_actions(ShopActions())
        engine.register(loader.load_definitions(ROOT / "definitions"))
    except BaseException:
        engine.close()
        raise
    return engine


def _openapi() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        engine = _engine(f"sqlite:///{folder}/schema.db")
        try:
            spec: dict[str, Any] = create_app(engine).openapi()
        finally:
            engine.close()
            gc.collect()
    return spec


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path_regex=STREAMS)


@pytest.fixture
def client(db_url: str) -> Iterator[Any]:
    """An in-process client of a fresh app, with a few instances to list, get and control."""
    engine = _engine(db_url)
    try:
        assert engine.execute("order-processing", ORDER, "done-1").status == "completed"
        failing = {**ORDER, "amount": 20_000}  # the card is declined: a failed instance
        assert engine.execute("order-processing", failing, "failed-1").status == "failed"
        assert engine.execute("expense-approval", {"amount": 40}, "waiting-1").status == "waiting"
        engine.execute("expense-approval", {"amount": 40}, "paused-1")
        engine.pause("paused-1")
        engine.execute("onboarding", {"email": "ada@example.com"}, "cancelled-1")
        engine.cancel("cancelled-1")
        engine.start("order-processing", ORDER, "pending-1")
        app = create_app(engine, allowed_hosts=[asgi.HOST])  # the Host the ASGI client sends
        with asgi.get_client(app) as session:
            yield session
    finally:
        asgi.shutdown_lifespans()  # schemathesis keeps an app's lifespan open until told
        engine.close()
        gc.collect()


def error_shape(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str), body


def guard_passed(response: Any) -> None:
    """The fuzzed calls reach the routes: the request guard refuses none of them."""
    if response.status_code >= 400:
        assert response.json()["error"]["code"] not in GUARD_CODES, response.text


def known_names(case: Any, data: st.DataObject) -> None:
    """Now and then use a name that exists instead of the generated one."""
    params = case.path_parameters or {}
    if "instance_id" in params and data.draw(st.booleans(), "known instance"):
        params["instance_id"] = data.draw(st.sampled_from(INSTANCES), "instance_id")
    if "name" in params and data.draw(st.booleans(), "known workflow"):
        params["name"] = data.draw(st.sampled_from(WORKFLOWS), "name")
    body = case.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("name"), str)
        and data.draw(st.booleans(), "known event")
    ):
        body["name"] = data.draw(st.sampled_from(EVENTS), "event")


@pytest.mark.timeout(120)
@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # one engine per operation, shared by its examples
    ],
)
def test_no_server_errors(case: Any, client: Any, data: st.DataObject) -> None:
    known_names(case, data)
    # a POST is JSON even without a body (cancel, pause...): the server refuses other types
    headers = JSON if case.method.upper() == "POST" else None
    response = case.call(base_url=client.base_url, session=client, headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
    error_shape(response)
    guard_passed(response)
