"""Commands that change what is stored: cancel, pause, resume, retry, replay, send, prune,
unregister, emit."""

from __future__ import annotations

from typing import Annotated

import typer

from statemachine.cli import engines, output
from statemachine.cli.app import DEFAULT_DB, Create, Db, Defs, app, parse_json

VERBS = {
    "cancel": "Cancel an instance (terminal).",
    "pause": "Pause: no new step starts until resume.",
    "resume": "Resume a paused instance.",
    "retry": "Continue a failed instance from its failed step(s).",
    "replay": "Start a new instance with the same input and definition version; prints its id.",
}


def _control(verb: str) -> None:
    """Register ``verb`` as a command calling the engine's method of that name on one id."""

    def command(instance_id: str, db: Db = DEFAULT_DB, definitions: Defs = None) -> None:
        with engines.engine_for(db, definitions, None, run=False, create=False) as engine:
            instance_id = engines.resolve_id(engine, instance_id)
            result = getattr(engine, verb)(instance_id)
            output.stdout.print(
                result
                if isinstance(result, str)
                else f"{verb}: {instance_id} is now {engine.get(instance_id).status}"
            )

    command.__doc__ = VERBS[verb]
    app.command(verb)(command)


for _verb in VERBS:
    _control(_verb)


@app.command()
def send(
    instance_id: str,
    event: str,
    data: Annotated[str | None, typer.Option("--data", help="Event data as JSON.")] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Send an event to an instance (kept in its inbox until it waits for it)."""
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        instance_id = engines.resolve_id(engine, instance_id)
        engine.send_event(instance_id, event, parse_json(data, "--data"))
        output.stdout.print(f"sent {event} to {instance_id}")


@app.command()
def prune(
    db: Db = DEFAULT_DB,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of finished instances to delete.")
    ] = "30d",
) -> None:
    """Delete finished instances older than --older-than, with their history (and checkpoint the WAL)."""
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        output.stdout.print(
            f"pruned {engine.prune(older_than)} finished instances older than {older_than}"
        )


@app.command()
def unregister(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    version: Annotated[
        str | None, typer.Option("--version", help="Only this version (default: every one).")
    ] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """No new instances of a workflow, for every engine on the database; running ones finish."""
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        engine.unregister(workflow, version)
        which = "every version" if version is None else f"version {version}"
        output.stdout.print(
            f"unregistered {workflow} ({which}); running instances finish on theirs"
        )


@app.command()
def emit(
    name: Annotated[str, typer.Argument(help="Event name, e.g. Customer.created.")],
    data: Annotated[str | None, typer.Option("--data", help="Event data as JSON.")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Idempotency key: the same key again starts nothing, prints the same ids."
        ),
    ] = None,
    db: Db = DEFAULT_DB,
    create: Create = False,
    definitions: Defs = None,
) -> None:
    """Start every workflow (from --definitions) whose trigger matches the event; prints their ids."""
    payload = parse_json(data, "--data")
    with engines.engine_for(db, definitions, None, run=False, create=create) as engine:
        ids = engine.emit(name, payload, idempotency_key=key)
        for iid in ids:
            output.stdout.print(iid)
        if not ids:
            output.stderr.print(f"no registered workflow has a trigger matching {name!r}")
