"""The ``statemachine`` command line: one typer app; each command is a small function.

Exit codes (API.md section 7): 0 success, 1 a workflow failed, 2 bad usage or a bad
definition; ``worker`` also 1 when it stopped on an unexpected error, 3 when the database could
not be reached at start-up (``cli_ops.worker``). Errors are one line each on stderr, never a traceback: ``main`` is the last net.
New commands add themselves with ``@app.command()`` and report problems through ``fail``.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from statemachine import errors
from statemachine.definition import issues

if TYPE_CHECKING:  # loaded by the commands that need them: --help stays quick (see __init__)
    from statemachine.definition import models

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DATABASE = 3  # ``worker``: the database could not be reached at start-up
YAML_SUFFIXES = (".yaml", ".yml")

app = typer.Typer(
    name="statemachine",
    help="Durable workflows from Python or YAML: validate, draw and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# soft_wrap: never break "file:line:column: message" lines at the terminal width (CI logs, pipes);
# no markup or emoji parsing: file names, messages and diagrams are printed as written.
# a pipe has no width: keep ids and tables whole there rather than folding them at 80 columns
stdout = Console(
    soft_wrap=True,
    highlight=False,
    emoji=False,
    markup=False,
    width=None if sys.stdout.isatty() else 220,
)
stderr = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False, markup=False)


def _print_version(value: bool) -> None:
    if value:
        import statemachine

        typer.echo(f"statemachine {statemachine.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Durable workflows from Python or YAML: validate, draw and run them."""


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def error_line(message: str) -> None:
    stderr.print(Text.assemble(("error", "bold red"), f": {message}"))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and leave with ``code``."""
    error_line(message)
    raise typer.Exit(code)


def print_issues(issues: Sequence[errors.Issue]) -> None:
    """Every issue as ``file:line:column: location: message`` (editors and CI jump to these)."""
    for issue in issues:
        stderr.print(Text(str(issue), style="red"))


def report_error(exc: errors.StatemachineError, source: str) -> None:
    if isinstance(exc, errors.DefinitionError) and exc.errors:
        print_issues(exc.errors)
    else:
        error_line(f"{source}: {one_line(exc)}")


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
        report_error(exc, str(file))
    except Exception as exc:  # a bug, not the author's mistake: still one line, no traceback
        error_line(f"{file}: {type(exc).__name__}: {one_line(exc)}")
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
    from statemachine.definition import yaml_source

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
    known = cli_ops.action_names(actions) if actions else None
    ok = True
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        if not path.exists():
            error_line(f"{path}: no such file or folder")
            ok = False
            continue
        files = list(yaml_files(path))
        if not files:
            error_line(f"{path}: no *.yaml or *.yml files found")
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
                print_issues([errors.Issue(message, "id", str(file), 1, 1, "duplicate_workflow")])
                ok = False
                continue
            seen[key] = file
            unknown = [] if known is None else missing_actions(file, definition, known)
            if unknown:
                print_issues(unknown)
                ok = False
                continue
            stdout.print(Text.assemble(("ok", "green"), f": {file} ({describe(definition)})"))
    raise typer.Exit(EXIT_OK if ok else EXIT_USAGE)


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="A YAML workflow definition.")],
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="Diagram language.", case_sensitive=False)
    ] = GraphFormat.mermaid,
) -> None:
    """Print the workflow's graph as Mermaid (default) or Graphviz DOT."""
    if not file.is_file():
        fail(f"{file}: no such file")
    definition = load_one(file)
    if definition is None:
        raise typer.Exit(EXIT_USAGE)
    diagram = definition.to_dot() if format is GraphFormat.dot else definition.to_mermaid()
    stdout.print(diagram, end="")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the YAML format (editors: docs/statemachine.schema.json)."""
    from statemachine.definition import yaml_schema

    typer.echo(yaml_schema.schema_text(), nl=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="statemachine")
    except errors.StatemachineError as exc:
        report_error(exc, "statemachine")
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # the last net: one line on stderr, never a traceback
        error_line(f"{type(exc).__name__}: {one_line(exc)}")
        sys.exit(EXIT_USAGE)


# the other commands register themselves on ``app`` when imported
from statemachine import cli_ops, cli_serve  # noqa: E402, F401
