"""The typer app every command registers on, and the options and arguments they share.

Commands add themselves with ``@app.command()`` in their own modules, which import this one;
the package ``__init__`` imports those modules in the order ``--help`` lists them. The shared
options: ``--db`` (or ``STATEMACHINE_DB``), ``--create`` (on the commands that start
instances), ``--definitions`` and ``--actions module:object``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from statemachine.cli import output

DEFAULT_DB = "sqlite:///statemachine.db"

app = typer.Typer(
    name="statemachine",
    help="Durable workflows from Python or YAML: validate, draw and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Db = Annotated[str, typer.Option("--db", envvar="STATEMACHINE_DB", help="Database URL.")]
Defs = Annotated[
    Path | None,
    typer.Option(
        "--definitions", "-d", help="Folder of YAML definitions (default: ./definitions)."
    ),
]
Create = Annotated[
    bool,
    typer.Option(
        "--create", help="Create the SQLite database file if it does not exist (else an error)."
    ),
]
Actions = Annotated[
    str | None,
    typer.Option("--actions", "-a", help="module:object whose public methods are actions."),
]


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


def parse_json(text: str | None, what: str) -> Any:
    """``text`` as JSON (None stays None); invalid JSON is a usage error naming ``what``."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        output.fail(f"{what} is not valid JSON: {exc}")
