"""An error-branch target runs only on that error, in a sequential scope as in a DAG.

workflow.do's `resilient-workflow`: `fallback` has `onError: branch, errorBranch: notify-admin`,
and `notify-admin` is written after it. A success must not fall through to the handler.
"""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import Engine, load_yaml, workflow

RESILIENT = """
id: resilient-workflow
name: Resilient workflow
steps:
  - id: risky-step
    action: callExternalApi
    onError: retry
    maxRetries: 1
    retryDelay: 1s
  - id: fallback
    action: handleFailure
    onError: branch
    errorBranch: notify-admin
  - id: notify-admin
    action: alertAdmin
"""


class Actions:
    def __init__(self, *, fallback_fails: bool) -> None:
        self.fallback_fails = fallback_fails
        self.paged = 0

    def callExternalApi(self, data: Any) -> dict[str, bool]:
        return {"called": True}

    def handleFailure(self, data: Any) -> dict[str, bool]:
        if self.fallback_fails:
            raise RuntimeError("fallback broke")
        return {"handled": True}

    def alertAdmin(self, data: Any) -> dict[str, bool]:
        self.paged += 1
        return {"paged": True}


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_resilient_workflow_pages_the_admin_only_on_failure(engine: Engine, fails: bool) -> None:
    actions = Actions(fallback_fails=fails)
    engine.register_actions(actions)
    definition = load_yaml(RESILIENT)
    engine.register(definition)
    inst = engine.execute("resilient-workflow", {})
    assert inst.status == "completed"
    assert actions.paged == (1 if fails else 0)
    assert ("notify-admin" in inst.step_results) is fails
    assert inst.step_results["fallback"].status == ("failed" if fails else "completed")


def test_a_handler_written_mid_scope_is_passed_over_and_then_goes_on(engine: Engine) -> None:
    """`a` (error -> `h`), `h`, `b`: a success goes a -> b; a failure goes a -> h -> b."""
    runs: list[str] = []

    def step(name: str, fail: bool = False) -> Any:
        def handler(data: Any) -> str:
            runs.append(name)
            if fail:
                raise RuntimeError(name)
            return name

        return handler

    for fail in (False, True):
        runs.clear()
        definition = (
            workflow(f"mid-{fail}")
            .task("a", step("a", fail), on_error="branch", error_next="h")
            .task("h", step("h"))
            .task("b", step("b"))
            .build()
        )
        engine.register(definition)
        assert engine.execute(f"mid-{fail}", None).status == "completed"
        assert runs == (["a", "h", "b"] if fail else ["a", "b"])


def test_the_graph_draws_no_fall_through_edge_into_a_handler() -> None:
    definition = load_yaml(RESILIENT)
    mermaid = definition.to_mermaid()
    assert "n_fallback --> n_notify_admin" not in mermaid
    assert '-.->|"on error"| n_notify_admin' in mermaid


def test_a_step_named_like_a_compensation_is_refused() -> None:
    """Builder `a` (compensate=undo) -> `a#compensate` -> `c`: the name collided with `a`'s
    compensation path, so `undo` ran though nothing failed (issue 18, item 8)."""
    from statemachine import DefinitionError

    with pytest.raises(DefinitionError) as caught:
        (
            workflow("collide")
            .task("a", "noop", compensate="noop")
            .task("a#compensate", "noop")
            .task("c", "noop")
            .build()
        )
    (issue,) = caught.value.errors
    assert issue.location == "steps[1].id" and "'#'" in issue.message
