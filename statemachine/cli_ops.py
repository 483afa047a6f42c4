"""Commands that run and operate instances: run, worker, start, status, list, history, control.

They share ``--db`` (or ``STATEMACHINE_DB``), ``--definitions`` and ``--actions module:object``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from statemachine import errors, outage, records
from statemachine.cli import (
    EXIT_FAILED,
    EXIT_NO_DATABASE,
    EXIT_OK,
    app,
    error_line,
    fail,
    one_line,
    stderr,
    stdout,
)
from statemachine.definition import durations, loader
from statemachine.engine import Engine

_log = logging.getLogger("statemachine.worker")
DEFAULT_DB = "sqlite:///statemachine.db"
Db = Annotated[str, typer.Option("--db", envvar="STATEMACHINE_DB", help="Database URL.")]
Defs = Annotated[
    Path | None,
    typer.Option(
        "--definitions", "-d", help="Folder of YAML definitions (default: ./definitions)."
    ),
]
Actions = Annotated[
    str | None,
    typer.Option("--actions", "-a", help="module:object whose public methods are actions."),
]


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc}")


def load_actions(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        fail(f"--actions takes module:object, not {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r}: {exc}")
    try:
        obj = getattr(module, attr)
    except AttributeError:
        fail(f"module {module_name!r} has no {attr!r}")
    return obj() if isinstance(obj, type) else obj


def add_actions(engine: Engine, spec: str) -> None:
    """Register the actions of ``module:object``: a dict's items, or the object's public methods."""
    obj = load_actions(spec)
    if isinstance(obj, dict):
        for name, fn in obj.items():
            engine.action(name)(fn)
    else:
        engine.register_actions(obj)


def action_names(spec: str) -> set[str]:
    """The names ``worker --actions spec`` would know (``noop`` included), resolved the same way."""
    with Engine("sqlite:///:memory:") as engine:
        add_actions(engine, spec)
        return set(engine.registry.actions)


def connect(db: str, within: float, lease: str | None = None) -> Engine:
    """An engine on ``db``, waiting up to ``within`` seconds for a database that cannot be
    reached yet (a worker started before its database): exit 3 if it never could."""
    if not within:
        return Engine(db, lease=lease)
    try:
        return outage.retry(
            lambda: Engine(db, lease=lease),
            outage.Outage(),
            "connecting to the database",
            within=within,
        )
    except errors.StoreError as exc:
        if not outage.transient(exc):
            raise
        fail(
            f"cannot reach the database {db} (tried for {within:g}s): {outage.one_line(exc)}",
            code=EXIT_NO_DATABASE,
        )


@contextmanager
def engine_for(
    db: str,
    definitions: Path | None,
    actions: str | None,
    *,
    run: bool,
    connect_within: float = 0.0,
    lease: str | None = None,
) -> Iterator[Engine]:
    """An engine with the definitions (and, to run steps, the actions) registered."""
    engine = connect(db, connect_within, lease)
    try:
        if actions:
            add_actions(engine, actions)
        # the default folder only serves commands that run nothing: runners name theirs explicitly
        fallback = Path("definitions") if not run and Path("definitions").is_dir() else None
        folder = definitions or fallback
        if folder is not None:
            engine.register(loader.load_definitions(folder), check_actions=run)
        yield engine
    finally:
        engine.close()


def instance_json(inst: records.WorkflowInstance) -> str:
    data = {
        "id": inst.id,
        "workflow": inst.workflow_name,
        "version": inst.workflow_version,
        "status": inst.status,
        "output": inst.output,
        "error": {k: v for k, v in (inst.error or {}).items() if k != "traceback"} or None,
    }
    return json.dumps(data, indent=2, default=str)


def _progress(event: dict[str, Any]) -> None:
    kind, step = str(event.get("type")), event.get("step")
    marks = {
        "workflow.step.started": ("▶", "cyan"),
        "workflow.step.completed": ("✓", "green"),
        "workflow.step.failed": ("✗", "red"),
        "workflow.step.retry": ("↻", "yellow"),
        "workflow.step.skipped": ("-", "dim"),
    }
    if kind in marks:
        mark, style = marks[kind]
        extra = f" (attempt {event.get('attempt')})" if kind == "workflow.step.retry" else ""
        stderr.print(Text.assemble((f"{mark} ", style), f"{step}{extra}"))


@app.command()
def run(
    workflow: Annotated[
        str, typer.Argument(help="A YAML file, or the name of a workflow in --definitions.")
    ],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Workflow input as JSON.")
    ] = None,
    db: Db = DEFAULT_DB,
    definitions: Defs = None,
    actions: Actions = None,
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (idempotent).")
    ] = None,
) -> None:
    """Run a workflow here with live progress, then print the result as JSON (exit 1 if it failed)."""
    data = parse_json(input, "--input")
    is_file = workflow.endswith((".yaml", ".yml")) or Path(workflow).is_file()
    # by name: load the folder (./definitions by default) and check only that workflow's actions
    with engine_for(db, definitions, actions, run=is_file) as engine:
        name = workflow
        if is_file:
            definition = loader.load_yaml_file(workflow)
            engine.register(definition)
            name = definition.name
        else:
            engine.registry.check_actions(engine.definition(name))
        engine.on("workflow.step.*", _progress)
        inst = engine.execute(name, data, instance_id)
        while inst.status == "waiting" and inst.wake_at is not None:
            # a durable timer (poll interval, backoff, wait): sleep to it here; ^C leaves it stored
            time.sleep(max(0.0, (inst.wake_at - engine.clock.now()).total_seconds()) + 0.01)
            engine.run_due()
            inst = engine.get(inst.id)
        stdout.print(instance_json(inst))
    raise typer.Exit(
        EXIT_FAILED if inst.status in ("failed", "timed_out", "cancelled") else EXIT_OK
    )


@app.command()
def worker(
    db: Db = DEFAULT_DB,
    definitions: Defs = None,
    actions: Actions = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 8,
    poll_interval: Annotated[str, typer.Option(help="How often to look for due work.")] = "1s",
    grace: Annotated[
        str,
        typer.Option(
            help="On SIGTERM/SIGINT, how long running steps may take to finish; then their "
            "instances are released to other workers (a second signal: at once)."
        ),
    ] = "30s",
    connect_timeout: Annotated[
        str, typer.Option(help="How long to wait for the database at start-up (exit 3 after).")
    ] = "30s",
    lease: Annotated[
        str,
        typer.Option(help="How long a claim lasts without a heartbeat (takeover after a crash)."),
    ] = "30s",
) -> None:
    """Run instances as they fall due until SIGTERM/SIGINT (running steps finish first, for
    --grace at most). A database that goes away meanwhile is waited for, not an error.

    Exit 0: stopped on request (a signal, or a handler's SystemExit).

    Exit 1: stopped on an unexpected error (logged with its traceback).

    Exit 2: bad usage or definitions. Exit 3: no database within --connect-timeout at start-up.
    """
    within = _duration(connect_timeout, "--connect-timeout")
    _duration(grace, "--grace")
    _duration(lease, "--lease")
    with engine_for(
        db, definitions, actions, run=True, connect_within=within, lease=lease
    ) as engine:
        stderr.print(f"worker {engine.worker_id} on {db}: {len(engine.definitions())} workflows")
        code = EXIT_OK
        try:
            engine.run_worker(concurrency=concurrency, poll_interval=poll_interval, grace=grace)
        except Exception as exc:  # a bug, not an outage (those are waited for): say so, exit 1
            _log.error("the worker stopped on an unexpected error", exc_info=exc)
            error_line(f"the worker stopped on an unexpected error: {one_line(exc)}")
            code = EXIT_FAILED
    _exit_past_abandoned_steps(code)


def _duration(value: str, option: str) -> float:
    try:
        return durations.parse_duration(value)
    except durations.DurationSyntaxError as exc:
        fail(f"{option}: {exc}")


def _exit_past_abandoned_steps(code: int) -> NoReturn:
    """Leave now even if a handler's thread still runs (a step cut off by --grace or a second
    signal: its lease is released and its result would be discarded anyway); Python would
    otherwise wait for that pool thread (``sm-step-*``) before the process ends."""
    steps = [t for t in threading.enumerate() if t.name.startswith("sm-step")]
    for thread in steps:  # idle ones end at once: the pool was shut down
        thread.join(timeout=0.5)
    if any(t.is_alive() for t in steps):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


@app.command()
def start(
    workflow: Annotated[str, typer.Argument(help="Workflow name (from --definitions).")],
    input: Annotated[str | None, typer.Option("--input", "-i")] = None,
    db: Db = DEFAULT_DB,
    definitions: Defs = None,
    instance_id: Annotated[str | None, typer.Option("--id")] = None,
) -> None:
    """Start an instance for a worker to run; prints its id."""
    with engine_for(db, definitions, None, run=False) as engine:
        stdout.print(engine.start(workflow, parse_json(input, "--input"), instance_id))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


@app.command()
def status(
    instance_id: str, db: Db = DEFAULT_DB, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """An instance and a table of its steps."""
    with engine_for(db, None, None, run=False) as engine:
        inst = engine.get(instance_id)
        if as_json:
            stdout.print(inst.model_dump_json(indent=2))
            return
        stdout.print(f"{inst.id}  {inst.workflow_name} v{inst.workflow_version}  {inst.status}")
        table = Table("step", "status", "attempts", "started", "completed", "error")
        for path, st in inst.step_results.items():
            error = (st.error or {}).get("message", "") if st.error else ""
            table.add_row(
                path,
                st.status,
                str(st.attempts),
                _when(st.started_at),
                _when(st.completed_at),
                str(error),
            )
        stdout.print(table)


@app.command("list")
def list_(
    db: Db = DEFAULT_DB,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s")] = None,
    limit: int = 50,
    offset: int = 0,
) -> None:
    """Instances, newest first."""
    with engine_for(db, None, None, run=False) as engine:
        table = Table("id", "workflow", "version", "status", "current step", "created")
        for inst in engine.list(workflow, status, limit, offset):
            table.add_row(
                inst.id,
                inst.workflow_name,
                inst.workflow_version,
                inst.status,
                inst.current_step or "",
                _when(inst.created_at),
            )
        stdout.print(table)


@app.command()
def history(instance_id: str, db: Db = DEFAULT_DB) -> None:
    """The append-only history of an instance."""
    with engine_for(db, None, None, run=False) as engine:
        table = Table("seq", "at", "type", "step", "data")
        for entry in engine.history(instance_id):
            data = json.dumps(
                {k: v for k, v in entry.data.items() if k != "error"}
                | (
                    {"error": entry.data["error"].get("message")}
                    if isinstance(entry.data.get("error"), dict)
                    else {}
                ),
                default=str,
            )
            table.add_row(str(entry.seq), _when(entry.at), entry.type, entry.step or "", data[:120])
        stdout.print(table)


def _control(verb: str) -> None:
    def command(instance_id: str, db: Db = DEFAULT_DB, definitions: Defs = None) -> None:
        with engine_for(db, definitions, None, run=False) as engine:
            result = getattr(engine, verb)(instance_id)
            stdout.print(
                result
                if isinstance(result, str)
                else f"{verb}: {instance_id} is now {engine.get(instance_id).status}"
            )

    command.__doc__ = {
        "cancel": "Cancel an instance (terminal).",
        "pause": "Pause: no new step starts until resume.",
        "resume": "Resume a paused instance.",
        "retry": "Continue a failed instance from its failed step(s).",
        "replay": "Start a new instance with the same input and definition version; prints its id.",
    }[verb]
    app.command(verb)(command)


for _verb in ("cancel", "pause", "resume", "retry", "replay"):
    _control(_verb)


@app.command()
def send(
    instance_id: str,
    event: str,
    data: Annotated[str | None, typer.Option("--data", help="Event data as JSON.")] = None,
    db: Db = DEFAULT_DB,
) -> None:
    """Send an event to an instance (kept in its inbox until it waits for it)."""
    with engine_for(db, None, None, run=False) as engine:
        engine.send_event(instance_id, event, parse_json(data, "--data"))
        stdout.print(f"sent {event} to {instance_id}")


@app.command()
def prune(
    db: Db = DEFAULT_DB,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of finished instances to delete.")
    ] = "30d",
) -> None:
    """Delete finished instances older than --older-than, with their history (and checkpoint the WAL)."""
    with engine_for(db, None, None, run=False) as engine:
        stdout.print(
            f"pruned {engine.prune(older_than)} finished instances older than {older_than}"
        )
