"""``statemachine run``: run one instance here, with live progress, until it ends.

It prints the instance id as it starts; waiting for an event, the ``send`` command that delivers
it; on Ctrl-C, that the stored instance goes on and how to follow it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.text import Text

from statemachine.cli import engines, exits, output
from statemachine.cli.app import DEFAULT_DB, Actions, Create, Db, Defs, app, parse_json

if TYPE_CHECKING:  # the engine (SQLAlchemy, Alembic) loads when a command opens a database
    from statemachine import records
    from statemachine.engine import Engine

MARKS = {
    "workflow.step.started": ("▶", "cyan"),
    "workflow.step.completed": ("✓", "green"),
    "workflow.step.failed": ("✗", "red"),
    "workflow.step.retry": ("↻", "yellow"),
    "workflow.step.skipped": ("-", "dim"),
}


def _progress(event: dict[str, Any]) -> None:
    """One line on stderr per step event: a mark, the step, and the attempt or error."""
    kind, step = str(event.get("type")), event.get("step")
    if kind in MARKS:
        mark, style = MARKS[kind]
        extra = f" (attempt {event.get('attempt')})" if kind == "workflow.step.retry" else ""
        error = event.get("error")
        if isinstance(error, dict) and error.get("message"):
            extra += f": {error.get('type', 'Error')}: {error['message']}"
        output.stderr.print(Text.assemble((f"{mark} ", style), f"{step}{extra}"))


def awaited_events(engine: Engine, inst: records.WorkflowInstance) -> list[str]:
    """The events ``inst`` waits for now: its waiting ``wait`` steps that name one."""
    from statemachine import errors
    from statemachine.definition import models
    from statemachine.runtime import plan as plans

    try:
        definition = engine.definition(inst.workflow_name)
    except errors.StatemachineError:
        return []
    if definition.version != inst.workflow_version:
        return []
    plan = plans.plan_for(definition)
    names = []
    for path, result in inst.step_results.items():
        node = plan.find(path) if result.status == "waiting" else None
        if node is not None and isinstance(node.step, models.WaitStep) and node.step.event:
            names.append(node.step.event)
    return names


def _db_option(db: str) -> str:
    """``--db`` as the user would repeat it; a URL with a password is not printed."""
    if db == DEFAULT_DB or "STATEMACHINE_DB" in os.environ:
        return ""
    return " --db ..." if "@" in db else f" --db {db}"


def _follow_until_done(
    engine: Engine, inst: records.WorkflowInstance, db: str
) -> records.WorkflowInstance:
    """Run what falls due here until ``inst`` ends: its timers, and the events another shell
    sends it (``send`` makes it due). Waiting for an event says how to send it, once."""
    hinted: set[str] = set()
    while not inst.is_terminal:
        for name in awaited_events(engine, inst):
            if name not in hinted:
                hinted.add(name)
                output.stderr.print(
                    Text.assemble(
                        ("⏸ ", "yellow"),
                        f"waiting for event {name!r}; deliver it with: statemachine send "
                        f"{inst.id} {name} --data '{{}}'{_db_option(db)}",
                    )
                )
        pause = engines.POLL
        if inst.wake_at is not None:  # a durable timer: poll interval, backoff, wait
            pause = min(engines.POLL, max(0.0, (inst.wake_at - engine.clock.now()).total_seconds()))
        time.sleep(pause + 0.01)
        engine.run_due()
        inst = engine.get(inst.id)
    return inst


def _interrupted(engine: Engine, iid: str) -> NoReturn:
    """Ctrl-C during ``run``: the run was wound down (its lease given up) and the instance is
    stored; say how it goes on, then exit 130 at once: a handler still running in a thread
    would otherwise hold the exit until it returns (its step runs again on the worker that
    takes the instance over)."""
    from statemachine import errors, records

    try:
        status: str | None = engine.get(iid).status
    except errors.StatemachineError:
        status = None
    if status is None:
        output.stderr.print(f"interrupted before instance {iid} was stored: nothing goes on")
    elif status in records.TERMINAL:
        output.stderr.print(f"interrupted: instance {iid} is {status}")
    else:
        output.stderr.print(
            f"interrupted: instance {iid} ({status}) is stored and goes on: a worker on this "
            "database (statemachine worker) continues it; "
            f"follow it with: statemachine logs {iid} --follow"
        )
    engine.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exits.INTERRUPTED)


@app.command()
def run(
    workflow: Annotated[
        str, typer.Argument(help="A YAML file, or the name of a workflow in --definitions.")
    ],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Workflow input as JSON.")
    ] = None,
    db: Db = DEFAULT_DB,
    create: Create = False,
    definitions: Defs = None,
    actions: Actions = None,
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (idempotent).")
    ] = None,
) -> None:
    """Run a workflow here with live progress, then print the result as JSON (exit 1 if it failed).

    It runs until the instance ends: waiting for an event, it prints the ``send`` command that
    delivers it; Ctrl-C leaves the instance stored for a worker (exit 130)."""
    data = parse_json(input, "--input")
    is_file = workflow.endswith((".yaml", ".yml")) or Path(workflow).is_file()
    # by name: load the folder (./definitions by default) and check only that workflow's actions
    with engines.engine_for(db, definitions, actions, run=is_file, create=create) as engine:
        name = workflow
        if is_file:
            from statemachine.definition import loader

            definition = loader.load_yaml_file(workflow)
            engine.register(definition)
            name = definition.name
        else:
            engine.registry.check_actions(engine.definition(name))
        engine.on("workflow.step.*", _progress)
        output.show_logs()
        iid = instance_id or uuid.uuid4().hex
        output.stderr.print(Text.assemble(("instance ", "dim"), iid, (f" ({name})", "dim")))
        try:
            inst = _follow_until_done(engine, engine.execute(name, data, iid), db)
        except KeyboardInterrupt:
            _interrupted(engine, iid)
        output.stdout.print(output.instance_json(inst))
    raise typer.Exit(
        exits.FAILED if inst.status in ("failed", "timed_out", "cancelled") else exits.OK
    )
