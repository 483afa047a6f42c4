"""The dashboard's graph model (rows, edge kinds) and the HTTP status of every engine error."""

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine import (
    WorkflowDefinition,
    branch,
    errors,
    load_definitions,
    load_yaml,
    when,
    workflow,
)
from statemachine.server import errors as http_errors
from statemachine.server import graph, schemas

ROOT = Path(__file__).resolve().parents[2]


def rows(scope: schemas.GraphScope) -> dict[str, int]:
    return {n.path: n.layer for n in scope.steps}


def kinds(scope: schemas.GraphScope) -> dict[tuple[str, str], str]:
    return {(e.source, e.target): e.kind for e in scope.edges}


def test_a_sequence_is_one_step_per_row() -> None:
    definition = workflow("w").task("a", "noop").task("b", "noop").end("c").build()
    scope = graph.workflow_graph(definition)
    assert scope.name is None
    assert rows(scope) == {"a": 0, "b": 1, "c": 2}
    assert kinds(scope) == {("a", "b"): "next", ("b", "c"): "next"}


def test_choice_targets_share_a_row_and_join_below() -> None:
    definition = (
        workflow("w")
        .choice("check", choices=[when(lambda ctx: True, next="yes")], default="no")
        .task("yes", "noop", next="join")
        .task("no", "noop")
        .end("join")
        .build()
    )
    scope = graph.workflow_graph(definition)
    assert rows(scope) == {"check": 0, "yes": 1, "no": 1, "join": 2}
    labels = {(e.source, e.target): e.label for e in scope.edges}
    assert labels[("check", "no")] == "default"


def test_a_loop_edge_is_back_and_does_not_push_rows() -> None:
    definition = (
        workflow("w")
        .task("work", "noop")
        .loop("again", condition=lambda ctx: False, target="work", max_iterations=3)
        .end("done")
        .build()
    )
    scope = graph.workflow_graph(definition)
    assert rows(scope) == {"work": 0, "again": 1, "done": 2}
    assert kinds(scope)[("again", "work")] == "back"
    assert kinds(scope)[("again", "done")] == "next"


def test_dag_rows_follow_dependencies_and_error_branches() -> None:
    definition = load_yaml(
        """
id: dag
steps:
  - {id: a, action: noop}
  - {id: b, action: noop}
  - {id: c, action: noop, dependsOn: [a, b], onError: branch, errorBranch: alert}
  - {id: d, action: noop, dependsOn: [c]}
  - {id: alert, action: noop}
"""
    )
    scope = graph.workflow_graph(definition)
    assert rows(scope) == {"a": 0, "b": 0, "c": 1, "d": 2, "alert": 2}
    assert kinds(scope)[("c", "alert")] == "error"


def test_branches_are_nested_scopes_with_full_paths() -> None:
    definition = (
        workflow("w")
        .parallel(
            "fulfill",
            branches=[
                branch("shipping").task("ship", "noop").task("track", "noop").build(),
                branch("mail").task("notify", "noop").build(),
            ],
        )
        .end("done")
        .build()
    )
    scope = graph.workflow_graph(definition)
    (fulfill, done) = scope.steps
    assert fulfill.kind == "parallel" and done.layer == 1
    shipping, mail = fulfill.branches
    assert shipping.name == "shipping" and rows(shipping) == {
        "fulfill/shipping/ship": 0,
        "fulfill/shipping/track": 1,
    }
    assert kinds(shipping) == {("fulfill/shipping/ship", "fulfill/shipping/track"): "next"}
    assert rows(mail) == {"fulfill/mail/notify": 0}


def _scopes(scope: schemas.GraphScope) -> list[schemas.GraphScope]:
    return [scope, *(s for n in scope.steps for b in n.branches for s in _scopes(b))]


@pytest.mark.parametrize(
    "definition", load_definitions(ROOT / "definitions"), ids=lambda d: str(d.name)
)
def test_every_shipped_definition_draws_downwards(definition: WorkflowDefinition) -> None:
    top = graph.workflow_graph(definition)
    paths = []
    for scope in _scopes(top):
        row = rows(scope)
        paths.extend(row)
        for edge in scope.edges:
            assert edge.source in row and edge.target in row, edge
            if edge.kind != "back":
                assert row[edge.target] > row[edge.source], edge
    assert sorted(paths) == sorted(path for path, _ in definition.walk())


def test_layers_put_unconnected_steps_on_row_zero() -> None:
    assert graph.layers(["a", "b", "c"], [("a", "c")]) == {"a": 0, "b": 0, "c": 1}
    assert graph.back_edges(["a", "b"], ["a"], [("a", "b", ""), ("b", "a", "")]) == {("b", "a")}
    assert graph.back_edges(["a"], ["a"], [("a", "a", "")]) == {("a", "a")}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.WorkflowNotFound("w"), 404),
        (errors.InstanceNotFound("i"), 404),
        (errors.InvalidTransition("no"), 409),
        (errors.InputValidationError("bad"), 422),
        (errors.DefinitionError("bad"), 422),
        (errors.ExpressionError("bad"), 422),
        (errors.OutputNotStorable("bad"), 422),
        (errors.StoreError("down"), 503),
        (errors.StatemachineError("closed"), 500),
    ],
)
def test_engine_errors_map_to_statuses(error: errors.StatemachineError, status: int) -> None:
    assert http_errors.status_of(error) == status
