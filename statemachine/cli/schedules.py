"""``statemachine schedules``: every schedule on the database with its next fire time, and
pausing or resuming a workflow's schedules for every engine."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from statemachine.cli import engines, output
from statemachine.cli.app import DEFAULT_DB, Db, Defs, app


@app.command()
def schedules(
    db: Db = DEFAULT_DB,
    definitions: Defs = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only this workflow's schedules.")
    ] = None,
    pause: Annotated[
        str | None, typer.Option("--pause", help="Pause this workflow's schedules.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Resume this workflow's schedules.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List schedules with their next fire times (UTC); --pause/--resume a workflow's."""
    with engines.engine_for(db, definitions, None, run=False, create=False) as engine:
        if pause is not None:
            engine.pause_schedule(pause)
        if resume is not None:
            engine.resume_schedule(resume)
        found = engine.schedules(workflow)
    if as_json:
        for info in found:
            output.stdout.print(json.dumps(info.model_dump(mode="json")), soft_wrap=True)
        return
    if not found:
        output.stdout.print("no schedules")
        return
    header = ["WORKFLOW", "SCHEDULE", "TIMEZONE", "NEXT (UTC)", "LAST (UTC)", "STATE"]
    rows = [
        [
            i.workflow,
            i.spec,
            i.timezone,
            output.when(i.next_at),
            output.when(i.last_at),
            "paused" if i.paused else "active",
        ]
        for i in found
    ]
    output.print_columns(header, rows)
