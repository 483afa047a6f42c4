"""``statemachine migrate``: move running instances of a workflow onto another version (API.md
section 11), printing the plan's report as a table: one row per instance, ok or blocked with
every reason. ``--dry-run`` prints the plan and changes nothing; without it the ok instances
move (each checked again as it moves) and the table says what happened to each.

Exit 0 when every instance listed moved (or would, with ``--dry-run``), 1 when some were
blocked (the table says why), 2 for bad input: an unknown workflow, a file that is missing or
not a valid definition, a ``--map`` entry that names no step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statemachine.cli import definitions, engines, exits, output
from statemachine.cli.app import DEFAULT_DB, Db, app

if TYPE_CHECKING:
    from statemachine.runtime.migration import MigrationPlan

HEADER = ["INSTANCE", "STATUS", "FROM", "RESULT", "REASONS"]


def parse_map(entries: list[str]) -> dict[str, str]:
    """``old=new`` entries as a mapping; a malformed one is a usage error."""
    mapping: dict[str, str] = {}
    for entry in entries:
        old, sep, new = entry.partition("=")
        if not sep or not old.strip() or not new.strip():
            output.fail(f"--map takes old=new (step paths), not {entry!r}")
        if old.strip() in mapping:
            output.fail(f"--map names step {old.strip()!r} twice")
        mapping[old.strip()] = new.strip()
    return mapping


def print_report(plan: MigrationPlan, done: bool) -> None:
    ok_word = "migrated" if done else "ok"
    rows = [
        [
            check.instance_id,
            check.status,
            f"v{check.from_version}" if check.from_version else "",
            ok_word if check.ok else ("skipped" if done else "blocked"),
            "; ".join(check.reasons),
        ]
        for check in plan.report
    ]
    output.print_columns(HEADER, rows)


@app.command()
def migrate(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    to: Annotated[
        Path, typer.Option("--to", help="YAML file of the version to move the instances to.")
    ],
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="old=new: a step of the old version becomes this one."),
    ] = None,
    instance: Annotated[
        list[str] | None,
        typer.Option(
            "--instance", "-i", help="Only this instance (repeat; default: all not over)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report; change nothing.")
    ] = False,
    db: Db = DEFAULT_DB,
) -> None:
    """Move running instances onto the version in --to; a table says which can and why not."""
    moves = parse_map(mapping or [])
    if not to.is_file():
        output.fail(f"--to {to}: no such file")
    target = definitions.load_one(to)
    if target is None:
        raise typer.Exit(exits.USAGE)
    with engines.engine_for(db, None, None, run=False, create=False) as engine:
        ids = None if not instance else [engines.resolve_id(engine, i) for i in instance]
        plan = engine.plan_migration(workflow, to=target, mapping=moves, instances=ids)
        if not dry_run:
            engine.migrate(plan)
        print_report(plan, done=not dry_run)
        moved, total = len(plan.ok), len(plan.report)
        verb = "would move" if dry_run else "moved"
        output.stdout.print(
            f"{verb} {moved} of {total} instances of {workflow} to version {target.version} "
            f"({target.hash})" + ("; nothing changed (--dry-run)" if dry_run else "")
        )
        if moved < total:
            raise typer.Exit(exits.FAILED)
