"""``statemachine logs``: an instance's history as lines, ``ctx.log`` lines included."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from statemachine.cli import engines, exits, output
from statemachine.cli.app import DEFAULT_DB, Db, app

if TYPE_CHECKING:
    from statemachine import records


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
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        iid = engines.resolve_id(engine, instance_id)
        seen = 0
        try:
            while True:
                done = engine.get(iid).is_terminal  # read first: its history is complete
                for entry in engine.history(iid):
                    if entry.seq > seen:
                        seen = entry.seq
                        output.stdout.print(entry_line(entry))
                if done or not follow:
                    return
                time.sleep(engines.POLL)
        except KeyboardInterrupt:
            raise typer.Exit(exits.INTERRUPTED) from None


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
        style = output.LEVEL_STYLES.get(level, "bold red")
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
