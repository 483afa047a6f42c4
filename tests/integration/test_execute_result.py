"""``execute`` returns the finished instance from the runner's memory instead of reading it back:
it must equal what the database holds, field for field, whatever way the run ended."""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import Engine, StepContext, workflow


def _tag(data: Any, ctx: StepContext) -> Any:
    ctx.set_metadata("tagged", True)
    return {"seen": data}


def _boom(data: Any) -> Any:
    raise RuntimeError("no")


@pytest.mark.parametrize(
    ("name", "builder"),
    [
        ("ok", workflow("ok").task("a", _tag).task("b", lambda d: [d, 1.5, None])),
        ("fails", workflow("fails").task("a", _tag).task("b", _boom)),
        ("waits", workflow("waits").task("a", _tag).wait("nap", duration="1h").task("b", _tag)),
        (
            "choice",
            workflow("choice")
            .pass_("p", result={"x": 1})
            .choice("c", choices=[{"condition": "p.x == 1", "next": "yes"}], default="no")
            .pass_("yes", result="y", end=True)
            .pass_("no", result="n"),
        ),
    ],
)
def test_execute_returns_what_get_reads(engine: Engine, name: str, builder: Any) -> None:
    engine.register(builder.build())
    returned = engine.execute(name, {"n": 1})
    assert returned == engine.get(returned.id)
    assert list(returned.step_results) == list(engine.get(returned.id).step_results)
