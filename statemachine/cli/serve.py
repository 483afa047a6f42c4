"""``statemachine serve``: the HTTP API and dashboard, with a worker in the same process."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any

import typer
from rich.text import Text

from statemachine import errors
from statemachine.cli import engines, exits, output
from statemachine.cli.app import DEFAULT_DB, Actions, Create, Db, Defs, app

SERVER_HINT = "pip install 'durable-statemachine[server]'"


@contextmanager
def _quiet_signals() -> Iterator[None]:
    """Let uvicorn's shutdown finish here: it re-raises SIGTERM/SIGINT to the previous handler
    once it has stopped, which by default would kill the process before the worker and the
    engine are closed. A no-op handler turns that into a normal return."""
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: None)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The names the server answers for: localhost's, the one it is bound to, and ``extra``."""
    from statemachine.server import guard

    bound = [] if host in WILDCARD_HOSTS else [host]
    return [*guard.LOCAL_HOSTS, *bound, *extra]


def _report_worker_end(worker: Future[None]) -> None:
    """Said on stderr when it happens: /health turns 503 and nothing runs here any more."""
    if worker.cancelled() or worker.exception() is None:
        return
    output.stderr.print(
        Text.assemble(
            ("the embedded worker crashed:", "red"),
            f" {worker.exception()!r}; no step runs in this process any more (/health answers 503)",
        )
    )


@app.command()
def serve(
    db: Db = DEFAULT_DB,
    create: Create = False,
    definitions: Defs = None,
    actions: Actions = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="STATEMACHINE_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on the API (not on / and /health).",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Also answer requests for this host name (repeatable; '*' for any). "
            "Localhost names and --host are always allowed.",
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted, in bytes (413 beyond).")
    ] = 4 * 1024 * 1024,  # guard.DEFAULT_MAX_BODY
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve the API only; run no steps here.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="Worker concurrency.")] = 8,
) -> None:
    """Serve the HTTP API and the dashboard (and run a worker) until SIGTERM/SIGINT."""
    try:
        import uvicorn

        from statemachine.server import create_app
    except ImportError as exc:
        output.fail(f"serve needs the server extra ({exc.name} is missing): {SERVER_HINT}")
    hosts = allowed_hosts(host, allowed_host or [])
    with engines.engine_for(db, definitions, actions, run=not no_worker, create=create) as engine:
        worker: AbstractContextManager[Future[None] | None] = (
            nullcontext() if no_worker else engine.worker(concurrency=concurrency)
        )
        mode = "API only" if no_worker else f"worker {engine.worker_id}"
        output.stderr.print(
            f"serving {len(engine.definitions())} workflows on http://{host}:{port}/ "
            f"({mode}, {db}{', token required' if token else ''})"
        )
        if host in WILDCARD_HOSTS and not allowed_host:
            output.stderr.print(
                "listening on every interface, but answering only requests for localhost: "
                "add --allowed-host NAME for each name clients use (or '*' for any)"
            )
        try:
            with _quiet_signals(), worker as running:
                if running is not None:
                    running.add_done_callback(_report_worker_end)
                server_app = create_app(
                    engine, token or None, hosts, max_body=max_body, worker=running
                )
                uvicorn.run(server_app, host=host, port=port, log_level="info")
        except errors.StatemachineError as exc:  # the worker's crash, re-raised as it is joined
            output.fail(f"the embedded worker had crashed: {exc}", code=exits.FAILED)
