"""The ``statemachine`` command line (typer + rich); ``main`` is the console script.

Modules, each importing only those before it (no cycle): ``exits`` (exit codes), ``output``
(consoles, one-line errors, tables), ``app`` (the typer app and shared options), ``engines``
(opening a database for a command, id prefixes), then the commands, which register on the app
as they are imported, in the order ``--help`` lists them: ``definitions`` (validate, graph,
schema), ``run``, ``worker``, ``instances`` (start, status, list, history), ``control``
(cancel ... replay, send, prune, unregister, emit), ``schedules``, ``logs``, ``serve``,
``simulate``, ``migrate``. New commands add themselves with ``@app.command()`` and report
problems through ``output.fail``.

Nothing here loads the engine (SQLAlchemy, Alembic): commands import it when they open a
database, so ``--help`` and ``validate`` start quickly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from statemachine import errors
from statemachine.cli import app, exits, output

# the command modules register their commands as they are imported, in this order (--help's)
# isort: off
from statemachine.cli import definitions, run, worker, instances, control  # noqa: F401
from statemachine.cli import schedules, logs, serve, simulate, migrate  # noqa: F401
# isort: on

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; ``argv`` defaults to ``sys.argv[1:]``. Errors end as one
    line on stderr and exit 2, never a traceback: this is the last net."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app.app(args=args, prog_name="statemachine")
    except errors.StatemachineError as exc:
        output.report_error(exc, "statemachine")
        sys.exit(exits.USAGE)
    except Exception as exc:  # the last net: one line on stderr, never a traceback
        output.error_line(f"{type(exc).__name__}: {output.one_line(exc)}")
        sys.exit(exits.USAGE)
