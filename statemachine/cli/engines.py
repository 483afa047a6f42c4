"""An engine for a command: its database, definitions and actions, and the ids it is given.

A SQLite file that does not exist is an error for every command, the default
``statemachine.db`` included, unless ``--create`` (on ``run``, ``worker``, ``start``, ``emit``,
``serve``) asks for a new one: a mistyped ``--db``, or the right one from the wrong directory,
would otherwise start instances in an empty new database that no worker reads. Commands that take an instance
id also take a unique prefix of it (``resolve_id``). The engine (SQLAlchemy, Alembic) loads
only here, when a command opens a database: ``--help`` and ``validate`` stay quick.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statemachine.cli import exits, output

if TYPE_CHECKING:
    from statemachine.engine import Engine

POLL = 0.5  # seconds between looks at the database while following an instance
CANDIDATES = 10  # ids listed when a prefix is ambiguous
CREATORS = ("run", "worker", "start", "emit", "serve")  # the commands that take --create


def load_actions(spec: str) -> Any:
    """The object ``module:object`` names (a class is instantiated), imported from the cwd."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        output.fail(f"--actions takes module:object, not {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        output.fail(f"cannot import {module_name!r}: {exc}")
    try:
        obj = getattr(module, attr)
    except AttributeError:
        output.fail(f"module {module_name!r} has no {attr!r}")
    return obj() if isinstance(obj, type) else obj


def add_actions(engine: Engine, spec: str) -> None:
    """Register the actions of ``module:object``: a dict's items, or the object's public methods."""
    register_actions(engine, load_actions(spec))


def register_actions(engine: Engine, obj: Any) -> None:
    """Register ``obj``'s actions (what ``load_actions`` gave): a dict's items, or its methods."""
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


def refuse_missing(db: str, create: bool) -> None:
    """Stop, before anything is created, on a SQLite file that does not exist (unless
    ``create``), naming the absolute path: the usual cause is a typo or the wrong directory."""
    missing = None if create else missing_sqlite_file(db)
    if missing is None:
        return
    where = Path(missing).absolute()
    output.fail(
        f"no database at {where} ({db}): check --db or STATEMACHINE_DB and the directory, "
        f"or pass --create to make a new one ({', '.join(CREATORS)} take it)"
    )


def connect(
    db: str,
    within: float,
    lease: str | None = None,
    prepare: Callable[[Engine], None] | None = None,
) -> Engine:
    """An engine on ``db``, made ready by ``prepare`` (registering actions and definitions),
    waiting up to ``within`` seconds for a database that cannot be reached: exit 3 if it never
    could. Connecting and preparing are retried as one: a database that restarts just after
    the connection was made fails the registration, and the next try connects again."""
    from statemachine import errors
    from statemachine.engine import Engine, outage

    def attempt() -> Engine:
        engine = Engine(db, lease=lease)
        try:
            if prepare is not None:
                prepare(engine)
        except BaseException:
            engine.close()
            raise
        return engine

    if not within:
        return attempt()
    try:
        return outage.retry(attempt, outage.Outage(), "connecting to the database", within=within)
    except errors.StoreError as exc:
        if not outage.transient(exc):
            raise
        output.fail(
            f"cannot reach the database {db} (tried for {within:g}s): {outage.one_line(exc)}",
            code=exits.NO_DATABASE,
        )


@contextmanager
def engine_for(
    db: str,
    definitions: Path | None,
    actions: str | None,
    *,
    run: bool,
    create: bool = False,
    connect_within: float = 0.0,
    lease: str | None = None,
) -> Iterator[Engine]:
    """An engine with the definitions (and, to run steps, the actions) registered.
    A SQLite file that does not exist is an error unless ``create`` (the command's ``--create``)."""
    refuse_missing(db, create)
    engine = connect(db, connect_within, lease, preparation(definitions, actions, run=run))
    try:
        yield engine
    finally:
        engine.close()


def preparation(
    definitions: Path | None, actions: str | None, *, run: bool
) -> Callable[[Engine], None]:
    """What registers the actions and definitions on a new engine. They are loaded here, once
    and before connecting: a bad file or module is an error at once, and a connection retried
    (``connect``) registers them again without importing or reading anything twice."""
    from statemachine.definition import loader

    obj = load_actions(actions) if actions else None
    # the default folder only serves commands that run nothing: runners name theirs explicitly
    fallback = Path("definitions") if not run and Path("definitions").is_dir() else None
    folder = definitions or fallback
    loaded = loader.load_definitions(folder) if folder is not None else None

    def prepare(engine: Engine) -> None:
        if obj is not None:
            register_actions(engine, obj)
        if loaded is not None:
            # a folder loaded on every command must not bring back what `unregister` retired
            engine.register(loaded, check_actions=run, revive=False)

    return prepare


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
        output.fail(f"id prefix {given!r} matches {many} instances: {listed}; give more of the id")
    return given
