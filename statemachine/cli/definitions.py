"""Commands that read definitions and need no database: validate, graph, schema.

``validate --actions`` also checks that every action a file names exists, resolved as a worker
would; only then does it load the engine.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from statemachine import errors
from statemachine.cli import engines, exits, output
from statemachine.cli.app import app

if TYPE_CHECKING:  # loaded by the commands that need them: --help stays quick
    from statemachine.definition import issues, models

YAML_SUFFIXES = (".yaml", ".yml")


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def yaml_files(path: Path) -> Iterator[Path]:
    """``path`` itself, or every ``*.yaml``/``*.yml`` under it, in a stable order."""
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    else:
        yield path


def describe(definition: models.WorkflowDefinition) -> str:
    count = sum(1 for _ in definition.walk())
    plural = "step" if count == 1 else "steps"
    return f"{definition.name} v{definition.version}, {count} {plural}, hash {definition.hash}"


def load_one(file: Path) -> models.WorkflowDefinition | None:
    """Load ``file``, printing its problems; None when it is not a valid definition."""
    from statemachine.definition import loader

    try:
        return loader.load_yaml_file(file)
    except errors.StatemachineError as exc:
        output.report_error(exc, str(file))
    except Exception as exc:  # a bug, not the author's mistake: still one line, no traceback
        output.error_line(f"{file}: {type(exc).__name__}: {output.one_line(exc)}")
    return None


def _action_refs(
    steps: tuple[models.StepBase, ...], raw: list[Any], loc: issues.Loc
) -> Iterator[tuple[str, str, issues.Loc]]:
    """(step path, action name, YAML location of its key) of every action the steps name.

    A loaded definition keeps its steps in file order, so the model says what each step is and
    the raw document where its key was written.
    """
    from statemachine.definition import models

    for i, (step, data) in enumerate(zip(steps, raw, strict=True)):
        here = (*loc, i)
        keys = {"task": ("action", "compensate"), "poll": ("action", "check")}.get(step.kind, ())
        for key in keys:
            if isinstance(data.get(key), str):
                yield step.name, data[key], (*here, key)
        for j, br in enumerate(models.child_branches(step)):
            if isinstance(step, models.MapStep):
                at: issues.Loc = (*here, "iterator", "steps")
                inner = data["iterator"]["steps"]
            else:
                at = (*here, "branches", j, "steps")
                inner = data["branches"][j]["steps"]
            for path, name, where in _action_refs(br.steps, inner, at):
                yield f"{step.name}/{br.name}/{path}", name, where


def missing_actions(
    file: Path, definition: models.WorkflowDefinition, known: set[str]
) -> list[errors.Issue]:
    """Every action ``file`` names that ``known`` lacks, at its line, with the nearest known name."""
    from statemachine.definition import issues, yaml_source

    doc = yaml_source.parse_file(file)
    found = []
    for path, name, loc in _action_refs(definition.steps, doc.data["steps"], ("steps",)):
        if name not in known:
            hint = issues.did_you_mean(name, known)
            line, column = doc.position(loc)
            message = f"step {path!r} uses action {name!r}, which is not registered{hint}"
            found.append(
                errors.Issue(
                    message, issues.format_loc(loc), str(file), line, column, "unknown_action"
                )
            )
    return found


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(help="YAML files or folders (searched recursively for *.yaml / *.yml)."),
    ],
    actions: Annotated[
        str | None,
        typer.Option(
            "--actions",
            "-a",
            help="module:object whose public methods are actions: also check every action exists.",
        ),
    ] = None,
) -> None:
    """Check workflow definitions; print every problem as file:line:column: message."""
    known = engines.action_names(actions) if actions else None
    ok = True
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        if not path.exists():
            output.error_line(f"{path}: no such file or folder")
            ok = False
            continue
        files = list(yaml_files(path))
        if not files:
            output.error_line(f"{path}: no *.yaml or *.yml files found")
            ok = False
        for file in files:
            definition = load_one(file)
            if definition is None:
                ok = False
                continue
            key = (definition.name, definition.version)
            if key in seen and seen[key].resolve() != file.resolve():
                name = f"{definition.name!r} v{definition.version}"
                message = f"workflow {name} is also defined in {seen[key]}"
                output.print_issues(
                    [errors.Issue(message, "id", str(file), 1, 1, "duplicate_workflow")]
                )
                ok = False
                continue
            seen[key] = file
            unknown = [] if known is None else missing_actions(file, definition, known)
            if unknown:
                output.print_issues(unknown)
                ok = False
                continue
            output.stdout.print(
                Text.assemble(("ok", "green"), f": {file} ({describe(definition)})")
            )
    raise typer.Exit(exits.OK if ok else exits.USAGE)


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="A YAML workflow definition.")],
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="Diagram language.", case_sensitive=False)
    ] = GraphFormat.mermaid,
) -> None:
    """Print the workflow's graph as Mermaid (default) or Graphviz DOT."""
    if not file.is_file():
        output.fail(f"{file}: no such file")
    definition = load_one(file)
    if definition is None:
        raise typer.Exit(exits.USAGE)
    diagram = definition.to_dot() if format is GraphFormat.dot else definition.to_mermaid()
    output.stdout.print(diagram, end="")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the YAML format (editors: docs/statemachine.schema.json)."""
    from statemachine.definition import yaml_schema

    typer.echo(yaml_schema.schema_text(), nl=False)
