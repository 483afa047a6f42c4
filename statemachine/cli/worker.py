"""``statemachine worker``: run instances as they fall due, until a signal.

Exit 0 when stopped on request, 1 on an unexpected error, 3 when the database could not be
reached at start-up (``engines.connect``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Annotated, NoReturn

import typer

from statemachine.cli import engines, exits, output
from statemachine.cli.app import DEFAULT_DB, Actions, Create, Db, Defs, app

_log = logging.getLogger("statemachine.worker")


@app.command()
def worker(
    db: Db = DEFAULT_DB,
    create: Create = False,
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
        engines.engine_for(
            db,
            definitions,
            actions,
            run=True,
            create=create,
            connect_within=within,
            lease=lease,
        ) as engine,
        observability.serving(engine, metrics_port, metrics_host) as port,
    ):
        if port is not None:
            output.stderr.print(f"metrics on http://{metrics_host}:{port}/metrics")
        output.stderr.print(
            f"worker {engine.worker_id} on {db}: {len(engine.definitions())} workflows"
        )
        output.show_logs()  # ctx.log lines, and every step failure, retry and instance failure
        code = exits.OK
        try:
            engine.run_worker(concurrency=concurrency, poll_interval=poll_interval, grace=grace)
        except Exception as exc:  # a bug, not an outage (those are waited for): say so, exit 1
            _log.error("the worker stopped on an unexpected error", exc_info=exc)
            output.error_line(f"the worker stopped on an unexpected error: {output.one_line(exc)}")
            code = exits.FAILED
    _exit_past_abandoned_steps(code)


def _duration(value: str, option: str) -> float:
    from statemachine.definition import durations

    try:
        return durations.parse_duration(value)
    except durations.DurationSyntaxError as exc:
        output.fail(f"{option}: {exc}")


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
