"""Commands that run and operate instances: run, worker, start, status, list, history, logs,
control, send, emit.

They share ``--db`` (or ``STATEMACHINE_DB``), ``--definitions`` and ``--actions module:object``.
Commands that take an instance id also take a unique prefix of it (``resolve_id``). A SQLite
file that does not exist is created only by the commands that write instances on purpose
(``run``, ``worker``, ``start``, ``emit``, ``serve``); the others refuse it, so a mistyped
``--db`` is an error instead of an empty new database.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

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

if TYPE_CHECKING:  # the engine (SQLAlchemy, Alembic) loads when a command opens a database
    from statemachine import records
    from statemachine.engine import Engine


_log = logging.getLogger("statemachine.worker")
DEFAULT_DB = "sqlite:///statemachine.db"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
POLL = 0.5  # seconds between looks at the database while following an instance
CANDIDATES = 10  # ids listed when a prefix is ambiguous
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
    from statemachine.engine import Engine

    with Engine("sqlite:///:memory:") as engine:
        add_actions(engine, spec)
        return set(engine.registry.actions)


def missing_sqlite_file(db: str) -> str | None:
    """The file a SQLite URL names when it does not exist; None for one that does, for an
    in-memory or URI-style database, and for other databases."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db)
    except Exception:  # not a URL: the engine says so
        return None
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if path.startswith("file:") or url.query.get("uri"):
        return None
    return None if Path(path).exists() else path


def connect(db: str, within: float, lease: str | None = None) -> Engine:
    """An engine on ``db``, waiting up to ``within`` seconds for a database that cannot be
    reached yet (a worker started before its database): exit 3 if it never could."""
    from statemachine import errors, outage
    from statemachine.engine import Engine

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
    create: bool = True,
    connect_within: float = 0.0,
    lease: str | None = None,
) -> Iterator[Engine]:
    """An engine with the definitions (and, to run steps, the actions) registered.
    ``create=False``: a SQLite file that does not exist is an error, not a new database."""
    from statemachine.definition import loader

    missing = None if create else missing_sqlite_file(db)
    if missing is not None:
        fail(
            f"no database at {missing} (--db {db}); check the path or STATEMACHINE_DB "
            "(run, worker, start, emit and serve create a new one)"
        )
    engine = connect(db, connect_within, lease)
    try:
        if actions:
            add_actions(engine, actions)
        # the default folder only serves commands that run nothing: runners name theirs explicitly
        fallback = Path("definitions") if not run and Path("definitions").is_dir() else None
        folder = definitions or fallback
        if folder is not None:
            # a folder loaded on every command must not bring back what `unregister` retired
            engine.register(loader.load_definitions(folder), check_actions=run, revive=False)
        yield engine
    finally:
        engine.close()


def resolve_id(engine: Engine, given: str) -> str:
    """The instance id ``given`` names: itself when it exists, else the one id that begins
    with it. An ambiguous prefix is an error listing the candidates; no match is left to the
    engine, whose InstanceNotFound names ``given``."""
    if engine.repo.get(given) is not None:
        return given
    found = engine.repo.ids_starting_with(given, CANDIDATES + 1)
    if len(found) == 1:
        return found[0]
    if found:
        many = f"more than {CANDIDATES}" if len(found) > CANDIDATES else str(len(found))
        listed = ", ".join(found[:CANDIDATES]) + (", ..." if len(found) > CANDIDATES else "")
        fail(f"id prefix {given!r} matches {many} instances: {listed}; give more of the id")
    return given


LEVEL_STYLES = {"debug": "dim", "info": "cyan", "warning": "yellow", "error": "red"}


class ConsoleLog(logging.Handler):
    """Log records on stderr, one line each: time, level, message (a traceback becomes its
    exception's one-line summary)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().splitlines())
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                text += f": {type(exc).__name__}: {one_line(exc)}"
            level = record.levelname.lower()
            when = time.strftime("%H:%M:%S", time.localtime(record.created))
            style = LEVEL_STYLES.get(level, "bold red")
            stderr.print(Text.assemble((f"{when} ", "dim"), (f"{level:<8}", style), text))
        except Exception:
            self.handleError(record)


def show_logs() -> None:
    """Print the engine's log records (``ctx.log`` lines at INFO and above, a worker's failure
    reports) on stderr; without it Python shows only warnings, bare."""
    logger = logging.getLogger("statemachine")
    logger.setLevel(logging.INFO)
    logger.addHandler(ConsoleLog(logging.INFO))


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
        error = event.get("error")
        if isinstance(error, dict) and error.get("message"):
            extra += f": {error.get('type', 'Error')}: {error['message']}"
        stderr.print(Text.assemble((f"{mark} ", style), f"{step}{extra}"))


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
                stderr.print(
                    Text.assemble(
                        ("⏸ ", "yellow"),
                        f"waiting for event {name!r}; deliver it with: statemachine send "
                        f"{inst.id} {name} --data '{{}}'{_db_option(db)}",
                    )
                )
        pause = POLL
        if inst.wake_at is not None:  # a durable timer: poll interval, backoff, wait
            pause = min(POLL, max(0.0, (inst.wake_at - engine.clock.now()).total_seconds()))
        time.sleep(pause + 0.01)
        engine.run_due()
        inst = engine.get(inst.id)
    return inst


def _interrupted(engine: Engine, iid: str) -> NoReturn:
    """Ctrl-C during ``run``: the instance is stored; say how it goes on, then exit 130 at
    once: a handler still running in a thread would otherwise hold the exit until it returns
    (its step runs again on the worker that takes the instance over)."""
    from statemachine import errors, records

    try:
        status: str | None = engine.get(iid).status
    except errors.StatemachineError:
        status = None
    if status is None:
        stderr.print(f"interrupted before instance {iid} was stored: nothing goes on")
    elif status in records.TERMINAL:
        stderr.print(f"interrupted: instance {iid} is {status}")
    else:
        stderr.print(
            f"interrupted: instance {iid} ({status}) is stored and goes on: a worker on this "
            "database (statemachine worker) continues it once this run's lease expires; "
            f"follow it with: statemachine logs {iid} --follow"
        )
    engine.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


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
    """Run a workflow here with live progress, then print the result as JSON (exit 1 if it failed).

    It runs until the instance ends: waiting for an event, it prints the ``send`` command that
    delivers it; Ctrl-C leaves the instance stored for a worker (exit 130)."""
    data = parse_json(input, "--input")
    is_file = workflow.endswith((".yaml", ".yml")) or Path(workflow).is_file()
    # by name: load the folder (./definitions by default) and check only that workflow's actions
    with engine_for(db, definitions, actions, run=is_file) as engine:
        name = workflow
        if is_file:
            from statemachine.definition import loader

            definition = loader.load_yaml_file(workflow)
            engine.register(definition)
            name = definition.name
        else:
            engine.registry.check_actions(engine.definition(name))
        engine.on("workflow.step.*", _progress)
        show_logs()
        iid = instance_id or uuid.uuid4().hex
        stderr.print(Text.assemble(("instance ", "dim"), iid, (f" ({name})", "dim")))
        try:
            inst = _follow_until_done(engine, engine.execute(name, data, iid), db)
        except KeyboardInterrupt:
            _interrupted(engine, iid)
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
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface of --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run instances as they fall due until SIGTERM/SIGINT (running steps finish first, for
    --grace at most). A database that goes away meanwhile is waited for, not an error.

    Exit 0: stopped on request (a signal, or a handler's SystemExit).

    Exit 1: stopped on an unexpected error (logged with its traceback).

    Exit 2: bad usage or definitions. Exit 3: no database within --connect-timeout at start-up.
    """
    from statemachine import observability

    within = _duration(connect_timeout, "--connect-timeout")
    _duration(grace, "--grace")
    _duration(lease, "--lease")
    with (
        engine_for(
            db, definitions, actions, run=True, connect_within=within, lease=lease
        ) as engine,
        observability.serving(engine, metrics_port, metrics_host) as port,
    ):
        if port is not None:
            stderr.print(f"metrics on http://{metrics_host}:{port}/metrics")
        stderr.print(f"worker {engine.worker_id} on {db}: {len(engine.definitions())} workflows")
        show_logs()  # ctx.log lines, and every step failure, retry and instance failure
        code = EXIT_OK
        try:
            engine.run_worker(concurrency=concurrency, poll_interval=poll_interval, grace=grace)
        except Exception as exc:  # a bug, not an outage (those are waited for): say so, exit 1
            _log.error("the worker stopped on an unexpected error", exc_info=exc)
            error_line(f"the worker stopped on an unexpected error: {one_line(exc)}")
            code = EXIT_FAILED
    _exit_past_abandoned_steps(code)


def _duration(value: str, option: str) -> float:
    from statemachine.definition import durations

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
    """An instance and a table of its steps (--json: the whole instance as JSON)."""
    with engine_for(db, None, None, run=False, create=False) as engine:
        inst = engine.get(resolve_id(engine, instance_id))
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
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta", "-m", help="Only instances whose metadata has key=value (repeatable)."
        ),
    ] = None,
) -> None:
    """Instances, newest first; ids are printed whole whatever the terminal's width."""
    wanted = dict(_key_value(m) for m in meta or [])
    with engine_for(db, None, None, run=False, create=False) as engine:
        rows = [
            [
                inst.id,
                inst.workflow_name,
                inst.workflow_version,
                inst.status,
                inst.current_step or "",
                _when(inst.created_at),
            ]
            for inst in engine.list(workflow, status, limit, offset, metadata=wanted or None)
        ]
        print_columns(["id", "workflow", "version", "status", "current step", "created"], rows)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        fail(f"--meta takes key=value, not {text!r}")
    return key, value


def print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns, never cut: a narrow terminal wraps a long line rather than lose the end
    of an id (a table fitted to the width would fold or truncate it)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    stdout.print(Text(line(header), style="bold"))
    for row in rows:
        stdout.print(line(row))


@app.command()
def history(instance_id: str, db: Db = DEFAULT_DB) -> None:
    """The append-only history of an instance."""
    with engine_for(db, None, None, run=False, create=False) as engine:
        table = Table("seq", "at", "type", "step", "data")
        for entry in engine.history(resolve_id(engine, instance_id)):
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
        with engine_for(db, definitions, None, run=False, create=False) as engine:
            instance_id = resolve_id(engine, instance_id)
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
    with engine_for(db, None, None, run=False, create=False) as engine:
        instance_id = resolve_id(engine, instance_id)
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
    with engine_for(db, None, None, run=False, create=False) as engine:
        stdout.print(
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
    with engine_for(db, None, None, run=False, create=False) as engine:
        engine.unregister(workflow, version)
        which = "every version" if version is None else f"version {version}"
        stdout.print(f"unregistered {workflow} ({which}); running instances finish on theirs")


@app.command()
def emit(
    name: Annotated[str, typer.Argument(help="Event name, e.g. Customer.created.")],
    data: Annotated[str | None, typer.Option("--data", help="Event data as JSON.")] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Idempotency key: accepted, not used yet (see the note)."),
    ] = None,
    db: Db = DEFAULT_DB,
    definitions: Defs = None,
) -> None:
    """Start every workflow (from --definitions) whose trigger matches the event; prints their ids."""
    payload = parse_json(data, "--data")
    if key is not None:
        stderr.print(
            "note: --key is not used yet: events have no idempotency keys, so emitting the "
            "same event twice starts its workflows twice"
        )
    with engine_for(db, definitions, None, run=False) as engine:
        ids = engine.emit(name, payload)
        for iid in ids:
            stdout.print(iid)
        if not ids:
            stderr.print(f"no registered workflow has a trigger matching {name!r}")


@app.command()
def logs(
    instance_id: str,
    db: Db = DEFAULT_DB,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new entries until the instance ends."),
    ] = False,
) -> None:
    """An instance's history as lines, ctx.log lines included; --follow prints it as it grows,
    whichever process runs the instance (an entry appears once its step's result is committed)."""
    with engine_for(db, None, None, run=False, create=False) as engine:
        iid = resolve_id(engine, instance_id)
        seen = 0
        try:
            while True:
                done = engine.get(iid).is_terminal  # read first: its history is complete
                for entry in engine.history(iid):
                    if entry.seq > seen:
                        seen = entry.seq
                        stdout.print(entry_line(entry))
                if done or not follow:
                    return
                time.sleep(POLL)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


def entry_line(entry: records.HistoryEntry) -> Text:
    """One history entry as one line: time, type, step, and what it says."""
    from statemachine.runtime.context import LOG_ENTRY

    data = entry.data or {}
    when = entry.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if entry.at else ""
    if entry.type == LOG_ENTRY:
        level = str(data.get("level", "info"))
        fields = data.get("fields") or {}
        text = str(data.get("message", "")) + "".join(
            f" {k}={_plain(v)}" for k, v in fields.items()
        )
        style = LEVEL_STYLES.get(level, "bold red")
        kind: tuple[str, str] = (f"{level:<8}", style)
    else:
        text = _summary(data)
        kind = (f"{entry.type} ", "bold red" if "failed" in entry.type else "")
    step = f"{entry.step}: " if entry.step else ""
    return Text.assemble((f"{when} ", "dim"), kind, step, text)


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if text and " " not in text else json.dumps(text)


def _summary(data: dict[str, Any]) -> str:
    """An entry's data in a line: the error's message rather than the error, cut at 200."""
    shown = dict(data)
    error = shown.pop("error", None)
    text = json.dumps(shown, default=str) if shown else ""
    if len(text) > 200:
        text = text[:199] + "…"
    if isinstance(error, dict):
        text = f"{error.get('type', 'Error')}: {error.get('message', '')} {text}".strip()
    return text
