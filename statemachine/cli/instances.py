"""Commands that start and read instances: start, status, list, history.

``status`` also shows the workflow's flow control (concurrency limit, priority, schedules with
their next fire times): what may be holding a pending instance back.

Ids are printed whole whatever the terminal's width; every id argument takes a unique prefix.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from statemachine.cli import engines, output
from statemachine.cli.app import DEFAULT_DB, Create, Db, Defs, app, parse_json

if TYPE_CHECKING:  # loaded when a command opens a database: --help stays quick
    from statemachine import records
    from statemachine.engine import Engine


@app.command()
def start(
    workflow: Annotated[str, typer.Argument(help="Workflow name (from --definitions).")],
    input: Annotated[str | None, typer.Option("--input", "-i")] = None,
    db: Db = DEFAULT_DB,
    create: Create = False,
    definitions: Defs = None,
    instance_id: Annotated[str | None, typer.Option("--id")] = None,
) -> None:
    """Start an instance for a worker to run; prints its id."""
    with engines.engine_for(db, definitions, None, run=False, create=create) as engine:
        output.stdout.print(engine.start(workflow, parse_json(input, "--input"), instance_id))


@app.command()
def status(
    instance_id: str, db: Db = DEFAULT_DB, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """An instance, its workflow's flow control and a table of its steps (--json: the whole
    instance as JSON, with "flow_control")."""
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        inst = engine.get(engines.resolve_id(engine, instance_id))
        flow = flow_control(engine, inst)
        if as_json:
            whole = json.loads(inst.model_dump_json()) | {"flow_control": flow}
            output.stdout.print(json.dumps(whole, indent=2))
            return
        output.stdout.print(
            f"{inst.id}  {inst.workflow_name} v{inst.workflow_version}  {inst.status}"
            + (f"  priority {inst.priority}" if inst.priority else "")
            + (f"  key {inst.concurrency_key!r}" if inst.concurrency_key else "")
        )
        for line in flow_control_lines(flow):
            output.stdout.print(line)
        table = Table("step", "status", "attempts", "started", "completed", "error")
        for path, st in inst.step_results.items():
            error = (st.error or {}).get("message", "") if st.error else ""
            table.add_row(
                path,
                st.status,
                str(st.attempts),
                output.when(st.started_at),
                output.when(st.completed_at),
                str(error),
            )
        output.stdout.print(table)


def flow_control(engine: Engine, inst: records.WorkflowInstance) -> dict[str, Any]:
    """What decides when the workflow's instances start and are claimed, as ``status`` shows
    it beside an instance that may be held back by it: the concurrency limit and priority of
    the version this instance runs, and the workflow's schedules with their next fire times."""
    rec = engine.repo.get(inst.id)
    definition = engine.registry.definition_for(rec) if rec is not None else None
    limit = definition.concurrency if definition is not None else None
    return {
        "concurrency": None if limit is None else {"limit": limit.limit, "key": limit.key},
        "priority": definition.priority if definition is not None else 0,
        "schedules": [s.model_dump(mode="json") for s in engine.schedules(inst.workflow_name)],
    }


def flow_control_lines(flow: dict[str, Any]) -> list[str]:
    """``flow_control`` as text: nothing for a workflow that has none of it."""
    notes = []
    if flow["concurrency"] is not None:
        key = flow["concurrency"]["key"]
        per = f" per {key}" if key is not None else ""
        notes.append(f"at most {flow['concurrency']['limit']} running{per}")
    if flow["priority"]:
        notes.append(f"priority {flow['priority']}")
    lines = [f"flow control: {'; '.join(notes)}"] if notes else []
    for sched in flow["schedules"]:
        nxt = sched["next_at"]
        when = f"next {nxt[:19].replace('T', ' ')} UTC" if nxt else "no tick left"
        state = "paused" if sched["paused"] else "active"
        lines.append(f"schedule: {sched['spec']} ({sched['timezone']}), {when}, {state}")
    return lines


@app.command("list")
def list_(
    db: Db = DEFAULT_DB,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s")] = None,
    limit: int = 50,
    offset: int = 0,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta", "-m", help="Only instances whose metadata has key=value (repeatable)."
        ),
    ] = None,
) -> None:
    """Instances, newest first; ids are printed whole whatever the terminal's width."""
    wanted = dict(_key_value(m) for m in meta or [])
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        rows = [
            [
                inst.id,
                inst.workflow_name,
                inst.workflow_version,
                inst.status,
                inst.current_step or "",
                output.when(inst.created_at),
            ]
            for inst in engine.list(workflow, status, limit, offset, metadata=wanted or None)
        ]
        header = ["id", "workflow", "version", "status", "current step", "created"]
        output.print_columns(header, rows)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        output.fail(f"--meta takes key=value, not {text!r}")
    return key, value


@app.command()
def history(instance_id: str, db: Db = DEFAULT_DB) -> None:
    """The append-only history of an instance."""
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        table = Table("seq", "at", "type", "step", "data")
        for entry in engine.history(engines.resolve_id(engine, instance_id)):
            data = json.dumps(
                {k: v for k, v in entry.data.items() if k != "error"}
                | (
                    {"error": entry.data["error"].get("message")}
                    if isinstance(entry.data.get("error"), dict)
                    else {}
                ),
                default=str,
            )
            table.add_row(
                str(entry.seq), output.when(entry.at), entry.type, entry.step or "", data[:120]
            )
        output.stdout.print(table)
