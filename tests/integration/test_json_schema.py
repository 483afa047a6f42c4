"""JSON Schema in YAML: a workflow's `inputSchema`, a step's `inputSchema`/`outputSchema`.

A YAML or CLI user learns of bad input when it is given, not when a step fails on it: `start`,
`execute`, the CLI and HTTP refuse it with `InputValidationError` and store nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from statemachine import DefinitionError, Engine, InputValidationError, load_yaml, workflow

ROOT = Path(__file__).resolve().parents[2]

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
}

ORDERS = """
id: schema-orders
inputSchema:
  type: object
  required: [order_id, amount]
  properties:
    order_id: {type: string}
    amount: {type: number, minimum: 0}
steps:
  - id: price
    action: price
    params:
      amount: ${{ input.amount }}
    inputSchema:
      type: object
      required: [amount]
    outputSchema:
      type: object
      required: [total]
      properties:
        total: {type: number}
"""


def _engine(engine: Engine, total: Any) -> Engine:
    engine.action("price")(lambda data: {"total": total})
    engine.register(load_yaml(ORDERS))
    return engine


def test_input_that_fails_the_schema_is_refused_and_nothing_is_stored(engine: Engine) -> None:
    _engine(engine, 12.5)
    for bad in ({"order_id": 7, "amount": 1}, {"order_id": "o-1"}, {"order_id": "o", "amount": -1}):
        with pytest.raises(InputValidationError) as caught:
            engine.start("schema-orders", bad)
        assert "schema-orders" in str(caught.value)
        with pytest.raises(InputValidationError):
            engine.execute("schema-orders", bad)
    assert engine.list() == []
    done = engine.execute("schema-orders", {"order_id": "o-1", "amount": 10})
    assert done.status == "completed" and done.output == {"total": 12.5}


def test_a_step_output_that_fails_its_schema_fails_the_step(engine: Engine) -> None:
    _engine(engine, "twelve")
    inst = engine.execute("schema-orders", {"order_id": "o-1", "amount": 10})
    assert inst.status == "failed"
    error = inst.step_results["price"].error
    assert error is not None and "total" in error["message"] and "number" in error["message"]


def test_an_unsound_schema_is_a_definition_error_at_its_line() -> None:
    text = "id: w\ninputSchema:\n  type: strnig\nsteps:\n  - id: a\n    action: x\n"
    with pytest.raises(DefinitionError) as caught:
        load_yaml(text)
    (issue,) = caught.value.errors
    assert issue.location == "inputSchema" and issue.line == 3
    assert "not a valid JSON Schema" in issue.message
    with pytest.raises(DefinitionError) as caught:
        load_yaml("id: w\nsteps:\n  - id: a\n    action: x\n    outputSchema: [1]\n")
    assert caught.value.errors[0].location == "steps[0].outputSchema"


def test_the_builder_takes_a_json_schema_and_hashes_like_yaml() -> None:
    built = workflow("w", input_schema=ORDER_SCHEMA).task("a", "x").build()
    loaded = load_yaml(built.to_yaml())
    assert loaded.input_schema == ORDER_SCHEMA
    assert loaded.hash == built.hash


def test_the_cli_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "orders.yaml").write_text(ORDERS)
    env = {**os.environ, "STATEMACHINE_DB": f"sqlite:///{tmp_path}/cli.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "run", str(tmp_path / "defs" / "orders.yaml"),
         "--input", json.dumps({"order_id": 1}), "--create", "--actions", "tests.integration.test_json_schema:Actions"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "amount" in proc.stderr


class Actions:
    def price(self, data: Any) -> dict[str, float]:
        return {"total": 1.0}
