"""A corpus of hostile values through every public door, run on SQLite and Postgres at once.

Each case runs on both databases and the outcomes are compared in one test: the same
exception type (always of the ``StatemachineError`` family) and the same stored state. Postgres
refuses NUL in text and JSON and counts a column's length in characters; SQLite refuses
neither; a lone surrogate cannot be encoded by either driver. None of that may show: a value
is refused up front, by the same check, or stored and read back unchanged on both.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statemachine import Engine, StatemachineError, StepContext, workflow
from statemachine.testing import ManualClock
from tests.conftest import _postgres_server
from tests.integration.conftest import START

pytestmark = pytest.mark.postgres

VALUES: dict[str, Any] = {
    "nul": "a\x00b",
    "lone_high_surrogate": "a\ud800b",
    "lone_low_surrogate": "\udfff",
    "at_limit": "i" * 200,
    "over_limit": "i" * 201,
    "astral_at_limit": "\U0001d11e" * 200,  # 200 characters, 800 bytes of UTF-8
    "astral_over_limit": "\U0001d11e" * 201,
    "rtl_marks": "abc\u202edcba\u200f\u200e",
    "zwj_emoji": "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "combining": "e\u0301\u0308\u0323",
    "four_byte": "\U0001d518\U0001d52b\U0001d526",
    "bom_and_zero_width": "\ufeffa\u200bb",
    "controls": "a\x01\x1f\x7fb",
    "whitespace": " \t\n\r",
    "noncharacters": "\uffff\ufffe\U0010ffff",
    "sql_quote": "x'); DROP TABLE sm_instance; --",
    "placeholders": "%s %(x)s ? :name $1",
    "escaped_nul_text": "\\u0000",
    "empty": "",
    "integer": 5,
    "none": None,
}
UNSTORABLE = {"nul", "lone_high_surrogate", "lone_low_surrogate"}  # refused wherever stored
NAMES_THAT_FIT = {  # non-empty strings of at most 200 characters that every database stores
    case
    for case, value in VALUES.items()
    if isinstance(value, str) and 0 < len(value) <= 200 and case not in UNSTORABLE
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    """One engine per database, each on its own hand-moved clock, shared by the whole corpus
    (a fresh Postgres database per case would take most of the time); every case uses names
    and ids of its own."""
    from tests import pg

    folder: Path = tmp_path_factory.mktemp("hostile")
    with pg.temporary_database(_postgres_server()) as pg_url:
        opened = {
            "sqlite": Engine(f"sqlite:///{folder}/hostile.db", clock=ManualClock(START)),
            "postgres": Engine(pg_url, clock=ManualClock(START)),
        }
        for engine in opened.values():
            engine.register(workflow("plain").end("done").build())
            engine.register(workflow("waits").wait("w", event="go").build())
        try:
            yield opened
        finally:
            for engine in opened.values():
                engine.close()
            gc.collect()


def _attempt(call: Callable[[], Any]) -> Any:
    """What a call did: its value, or the type of the error it raised (of the family)."""
    try:
        return {"returned": call()}
    except StatemachineError as exc:
        return {"raised": type(exc).__name__}


def _state(engine: Engine, iid: str) -> dict[str, Any]:
    """An instance as stored, without what differs between runs (ids, times, tracebacks)."""
    inst = engine.get(iid)
    return {
        "status": inst.status,
        "input": inst.input,
        "output": inst.output,
        "error": _bare(inst.error),
        "metadata": inst.metadata,
        "steps": {
            name: (s.status, s.input, s.output, _bare(s.error))
            for name, s in inst.step_results.items()
        },
        "history": [(h.type, h.step, _bare(h.data)) for h in engine.history(iid)][1:],
    }


def _bare(data: Any) -> Any:
    """JSON data without tracebacks (their line numbers are not what is compared)."""
    if isinstance(data, dict):
        return {k: _bare(v) for k, v in data.items() if k != "traceback"}
    if isinstance(data, list):
        return [_bare(v) for v in data]
    return data


def _settle(engine: Engine) -> None:
    engine.run_due()
    engine.clock.advance("1h")  # type: ignore[attr-defined]  # a ManualClock
    engine.run_due()


# -- the doors: each takes (engine, case, value) and returns what happened, comparable ---------


def start_with_id(engine: Engine, case: str, value: Any) -> Any:
    started = _attempt(lambda: engine.start("plain", {"case": case}, instance_id=value))
    if "raised" in started:
        return started
    iid = started["returned"]
    _settle(engine)
    return {"kept": iid == value, "found": engine.get(iid).id == iid, **_state(engine, iid)}


def look_up_missing_id(engine: Engine, case: str, value: Any) -> Any:
    missing = f"missing:{value}" if isinstance(value, str) else value
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: engine.get(missing),
        "history": lambda: engine.history(missing),
        "pause": lambda: engine.pause(missing),
        "resume": lambda: engine.resume(missing),
        "cancel": lambda: engine.cancel(missing),
        "retry": lambda: engine.retry(missing),
        "replay": lambda: engine.replay(missing),
        "update_metadata": lambda: engine.update_metadata(missing, {"k": 1}),
        "send_event": lambda: engine.send_event(missing, "go", {}),
        "wait": lambda: engine.wait(missing, timeout=0),
    }
    return {name: _attempt(call) for name, call in calls.items()}


def start_unregistered_workflow(engine: Engine, case: str, value: Any) -> Any:
    name = f"unregistered:{value}" if isinstance(value, str) else value
    return [_attempt(lambda: engine.start(name, {})), _attempt(lambda: engine.execute(name, {}))]


def register_workflow_named(engine: Engine, case: str, value: Any) -> Any:
    built = _attempt(lambda: workflow(value).task("a", handler="noop").build())
    if "raised" in built:
        return built
    registered = _attempt(lambda: engine.register(built["returned"]))
    if "raised" in registered:
        return registered
    iid = engine.start(value, {"case": case})
    _settle(engine)
    listed = [i.id for i in engine.list(workflow=value)]
    return {"listed": listed == [iid], **_state(engine, iid)}


def register_step_named(engine: Engine, case: str, value: Any) -> Any:
    """A step's name is part of every path stored (and of map items' and compensations')."""
    built = _attempt(lambda: workflow(f"steps-{case}").task(value, handler="noop").build())
    if "raised" in built:
        return built
    registered = _attempt(lambda: engine.register(built["returned"]))
    if "raised" in registered:
        return registered
    iid = engine.start(f"steps-{case}", {"case": case})
    _settle(engine)
    return _state(engine, iid)


def list_by_workflow(engine: Engine, case: str, value: Any) -> Any:
    return _attempt(lambda: [i.workflow_name for i in engine.list(workflow=value)] or None)


def register_version(engine: Engine, case: str, value: Any) -> Any:
    built = _attempt(lambda: workflow(f"versioned-{case}", version=value).end("done").build())
    if "raised" in built:
        return built
    registered = _attempt(lambda: engine.register(built["returned"]))
    if "raised" in registered:
        return registered
    iid = engine.start(f"versioned-{case}", {})
    _settle(engine)
    return {"version": engine.get(iid).workflow_version, **_state(engine, iid)}


def send_event_named(engine: Engine, case: str, value: Any) -> Any:
    """To an instance waiting for an event of that very name (when a definition may say it)."""
    built = _attempt(lambda: workflow(f"waits-{case}").wait("w", event=value).build())
    name = f"waits-{case}" if "returned" in built else "waits"
    if "returned" in built:
        engine.register(built["returned"])
    iid = engine.start(name, {})
    _settle(engine)
    sent = _attempt(lambda: engine.send_event(iid, value, {"case": case}))
    _settle(engine)
    return {"definition": "raised" in built, "sent": sent, **_state(engine, iid)}


def emit_named(engine: Engine, case: str, value: Any) -> Any:
    """An event that starts the workflows whose trigger names it."""
    built = _attempt(lambda: workflow(f"triggered-{case}").trigger(value).end("done").build())
    if "returned" in built:
        engine.register(built["returned"])
    emitted = _attempt(lambda: engine.emit(value, {"case": case}))
    if "raised" in emitted:
        return {"definition": "raised" in built, **emitted}
    _settle(engine)
    return {"definition": "raised" in built, "started": [_state(engine, i) for i in emitted["returned"]]}  # fmt: skip


def workflow_input(engine: Engine, case: str, value: Any) -> Any:
    started = _attempt(lambda: engine.start("plain", {"value": value, "list": [value]}))
    keyed = _attempt(lambda: engine.start("plain", {value: 1}))
    states = [_state(engine, s["returned"]) if "returned" in s else s for s in (started, keyed)]
    return states


def event_data(engine: Engine, case: str, value: Any) -> Any:
    iid = engine.start("waits", {})
    _settle(engine)
    sent = [
        _attempt(lambda: engine.send_event(iid, "go", {"value": value})),
        _attempt(lambda: engine.send_event(iid, "go", {value: 1})),
    ]
    _settle(engine)
    return {"sent": sent, **_state(engine, iid)}


def update_metadata(engine: Engine, case: str, value: Any) -> Any:
    iid = engine.start("waits", {})
    done = [
        _attempt(lambda: engine.update_metadata(iid, {"value": value})),
        _attempt(lambda: engine.update_metadata(iid, {value: "key"})),
    ]
    return {"done": done, **_state(engine, iid)}


def _in_a_handler(kind: str) -> Callable[[Engine, str, Any], Any]:
    """A door inside a handler: what the step does with the value, and how often it ran."""

    def door(engine: Engine, case: str, value: Any) -> Any:
        runs: list[int] = []

        def handler(_: Any, ctx: StepContext) -> Any:
            runs.append(ctx.attempt)
            if kind == "output":
                return {"value": value, "list": [value]}
            if kind == "output_key":
                return {value: 1}
            if kind == "emit_named":
                ctx.emit(value, {"case": case})
            elif kind == "emit_data":
                ctx.emit("custom", {"value": value})
            elif kind == "set_metadata":
                ctx.set_metadata(value, value)
            elif kind == "raise":
                raise ValueError(value)
            elif kind == "log":
                ctx.log("info", value, value=value)
            return {"done": True}

        name = f"handler-{kind}-{case}"
        engine.register(workflow(name).task("a", handler).build())
        iid = engine.start(name, {})
        _settle(engine)
        return {"runs": runs, **_state(engine, iid)}

    return door


DOORS: dict[str, Callable[[Engine, str, Any], Any]] = {
    "start_with_id": start_with_id,
    "look_up_missing_id": look_up_missing_id,
    "start_unregistered_workflow": start_unregistered_workflow,
    "register_workflow_named": register_workflow_named,
    "register_version": register_version,
    "register_step_named": register_step_named,
    "list_by_workflow": list_by_workflow,
    "send_event_named": send_event_named,
    "emit_named": emit_named,
    "workflow_input": workflow_input,
    "event_data": event_data,
    "update_metadata": update_metadata,
    **{
        f"handler_{kind}": _in_a_handler(kind)
        for kind in ("output", "output_key", "emit_named", "emit_data", "set_metadata", "raise", "log")
    },
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(VALUES))
@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_hostile_value_has_the_same_outcome_on_sqlite_and_postgres(
    engines: dict[str, Engine], door: str, case: str
) -> None:
    value = VALUES[case]
    outcomes = {}
    for backend, engine in engines.items():
        try:
            outcomes[backend] = DOORS[door](engine, case, value)
        except Exception as exc:  # pragma: no cover - what this corpus exists to catch
            pytest.fail(f"{backend}: {door} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")  # fmt: skip
    assert outcomes["sqlite"] == outcomes["postgres"]
    _check_expected(door, case, outcomes["sqlite"])


def _check_expected(door: str, case: str, outcome: Any) -> None:
    """Beyond agreeing: what each kind of value must do (agreeing on a wrong answer is no use)."""
    value = VALUES[case]
    text = repr(outcome)
    if door == "start_with_id":
        if case in NAMES_THAT_FIT:
            assert outcome["kept"] and outcome["found"] and outcome["status"] == "completed"
        elif value in ("", None):
            assert not outcome["kept"] and outcome["status"] == "completed"  # a fresh id
        else:
            assert outcome == {"raised": "InputValidationError"}
    elif door == "register_step_named" and case in UNSTORABLE:  # paths hold 500 characters
        assert outcome == {"raised": "DefinitionError"}
    elif door == "look_up_missing_id":
        assert {o["raised"] for o in outcome.values()} == {"InstanceNotFound"}
    elif door == "send_event_named":
        if case not in NAMES_THAT_FIT:
            assert outcome["sent"] == {"raised": "InputValidationError"}
        elif not outcome["definition"]:  # a definition may name it: delivered, and it ends
            assert outcome["status"] == "completed" and outcome["output"] == {"case": case}
    elif door == "emit_named" and case not in NAMES_THAT_FIT:
        assert outcome["raised"] == "InputValidationError"
    elif door in ("workflow_input", "event_data", "update_metadata", "handler_output"):
        if case in UNSTORABLE:  # refused, with nothing of it stored
            assert "InputValidationError" in text or "OutputNotStorable" in text
            assert "\\x00" not in text.replace("\\\\x00", "") and "\\ud8" not in text
        elif isinstance(value, str):
            assert repr(value) in text  # stored, and read back unchanged
    elif door == "handler_emit_named":
        assert outcome["runs"] == [1]  # refused in the handler: never a re-run
        assert outcome["status"] == ("completed" if case in NAMES_THAT_FIT else "failed")
    elif door in ("handler_emit_data", "handler_set_metadata", "handler_raise"):
        assert outcome["runs"] == [1]
        if case in UNSTORABLE and door != "handler_raise":
            assert outcome["status"] == "failed"
