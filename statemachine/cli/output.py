"""What the command line writes: the two consoles, one-line errors, log lines and tables.

Errors are one line each on stderr, never a traceback; data (ids, JSON, tables) goes to stdout
so it can be piped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from statemachine import errors
from statemachine.cli import exits

if TYPE_CHECKING:  # loaded by the commands that read instances: --help stays quick
    from statemachine import records

# soft_wrap: never break "file:line:column: message" lines at the terminal width (CI logs, pipes);
# no markup or emoji parsing: file names, messages and diagrams are printed as written.
# a pipe has no width: keep ids and tables whole there rather than folding them at 80 columns
stdout = Console(
    soft_wrap=True,
    highlight=False,
    emoji=False,
    markup=False,
    width=None if sys.stdout.isatty() else 220,
)
stderr = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False, markup=False)

LEVEL_STYLES = {"debug": "dim", "info": "cyan", "warning": "yellow", "error": "red"}


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def error_line(message: str) -> None:
    stderr.print(Text.assemble(("error", "bold red"), f": {message}"))


def fail(message: str, code: int = exits.USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and leave with ``code``."""
    error_line(message)
    raise typer.Exit(code)


def print_issues(issues: Sequence[errors.Issue]) -> None:
    """Every issue as ``file:line:column: location: message`` (editors and CI jump to these)."""
    for issue in issues:
        stderr.print(Text(str(issue), style="red"))


def report_error(exc: errors.StatemachineError, source: str) -> None:
    if isinstance(exc, errors.DefinitionError) and exc.errors:
        print_issues(exc.errors)
    else:
        error_line(f"{source}: {one_line(exc)}")


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


def when(value: Any) -> str:
    """A stored time to the second, or nothing when there is none."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns, never cut: a narrow terminal wraps a long line rather than lose the end
    of an id (a table fitted to the width would fold or truncate it)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    stdout.print(Text(line(header), style="bold"))
    for row in rows:
        stdout.print(line(row))


def instance_json(inst: records.WorkflowInstance) -> str:
    """The result ``run`` prints: what ended, and its output or error (no traceback)."""
    data = {
        "id": inst.id,
        "workflow": inst.workflow_name,
        "version": inst.workflow_version,
        "status": inst.status,
        "output": inst.output,
        "error": {k: v for k, v in (inst.error or {}).items() if k != "traceback"} or None,
    }
    return json.dumps(data, indent=2, default=str)
